//! The spans of runs, built from the records a host commits: one per run
//! (from its creation to its end), one per call attempt (from its journaled
//! start to its journaled end, as the metrics time it) and one per outbound
//! request. Their ids come from the run's trace context
//! ([`crate::telemetry`]), so spans made on different hosts for one run fit
//! together. It may not change runs: it only observes them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::Telemetry;
use crate::journal::{Journal, Observer, RecordKind};
use crate::saga::{Action, CallRecord, OutboundRequest, RunError, RunStatus};
use crate::telemetry::TraceContext;

/// The most runs followed at once (a run that parks or ends is dropped; one
/// that another host finishes is forgotten past this).
const RUNS: usize = 100_000;

/// The spans of the runs one host executes, for its telemetry.
pub struct RunSpans {
    telemetry: Arc<Telemetry>,
    /// Where a run not begun here is looked up (its context and creation).
    journal: Arc<dyn Journal>,
    runs: Mutex<HashMap<Arc<str>, Option<RunState>>>,
}

/// What a run's spans need until it ends or parks.
struct RunState {
    context: TraceContext,
    workflow: String,
    created: SystemTime,
    /// Why it failed (from its `compensating` record).
    error: Option<String>,
    /// Call attempts started and not ended: when, and their step.
    open: HashMap<(String, Action, u32), (SystemTime, String)>,
}

/// One span's identity and place.
struct Place<'a> {
    context: &'a TraceContext,
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    remote_parent: bool,
}

impl RunSpans {
    /// The spans of `journal`'s runs, exported by `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>, journal: Arc<dyn Journal>) -> RunSpans {
        RunSpans {
            telemetry,
            journal,
            runs: Mutex::default(),
        }
    }

    /// A run was recorded here just now, in the trace `context`.
    pub fn began(&self, run: &str, workflow: &str, context: TraceContext) {
        let state = RunState {
            context,
            workflow: workflow.to_string(),
            created: SystemTime::now(),
            error: None,
            open: HashMap::new(),
        };
        self.with_runs(|runs| {
            runs.insert(run.into(), Some(state));
        });
    }

    fn with_runs<T>(&self, f: impl FnOnce(&mut HashMap<Arc<str>, Option<RunState>>) -> T) -> T {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.len() >= RUNS {
            runs.clear();
        }
        f(&mut runs)
    }

    /// Makes sure `run` is followed (read from the journal when it was not
    /// begun here: a resume, a take-over), outside the lock.
    fn follow(&self, run: &str) {
        if self.with_runs(|runs| runs.contains_key(run)) {
            return;
        }
        let state = match self.journal.run(run) {
            Ok(record) => record.trace_context().map(|context| RunState {
                context,
                created: at_ms(record.created_at),
                workflow: record.workflow,
                error: record.error.as_ref().map(describe),
                open: HashMap::new(),
            }),
            Err(e) => {
                // Not remembered: the next record tries again.
                tracing::debug!(run, "no spans for this run yet: {e}");
                return;
            }
        };
        self.with_runs(|runs| {
            runs.entry(run.into()).or_insert(state);
        });
    }

    fn emit(
        &self,
        place: Place<'_>,
        name: String,
        kind: SpanKind,
        times: (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) {
        // The caller decided not to record this trace: its context is still
        // passed on, but nothing is exported.
        if !place.context.sampled {
            return;
        }
        let (start, end) = times;
        self.telemetry.export(SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(place.context.trace_id),
                SpanId::from_bytes(place.id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: place.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: place.remote_parent,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end.max(start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.telemetry.scope.clone(),
        });
    }

    fn attempt_ended(
        &self,
        run: &str,
        state: &mut RunState,
        key: (String, Action, u32),
        record: &CallRecord,
    ) {
        // An attempt whose start this host did not see (an async step's
        // answer, a timeout noticed later) has no span of its own: its wait
        // is the invoke's span (outcome `waiting`), its end the run's.
        let Some((start, step)) = state.open.remove(&key) else {
            return;
        };
        let (node, action, attempt) = key;
        let mut attributes = vec![
            KeyValue::new("wasaga.run_id", run.to_string()),
            KeyValue::new("wasaga.workflow", state.workflow.clone()),
            KeyValue::new("wasaga.call", node.clone()),
            KeyValue::new("wasaga.step", step.clone()),
            KeyValue::new("wasaga.action", action.as_str()),
            KeyValue::new("wasaga.attempt", i64::from(attempt)),
            KeyValue::new("wasaga.outcome", record.outcome_name()),
        ];
        let status = match record {
            CallRecord::Failed { error, last } => {
                attributes.push(KeyValue::new("error.type", error.kind.as_str()));
                attributes.push(KeyValue::new("wasaga.retried", !last));
                Status::error(error.message.clone())
            }
            _ => Status::Unset,
        };
        let context = state.context;
        self.emit(
            Place {
                context: &context,
                id: context.call_span(run, &node, action, attempt),
                parent: Some(context.run_span(run)),
                remote_parent: false,
            },
            format!("{} {step}", action.as_str()),
            SpanKind::Internal,
            (start, SystemTime::now()),
            attributes,
            status,
        );
    }

    fn requests_made(
        &self,
        run: &str,
        state: &RunState,
        (node, action, attempt): (&str, Action, u32),
        requests: &[OutboundRequest],
    ) {
        let context = state.context;
        let now = SystemTime::now();
        for (index, request) in requests.iter().enumerate() {
            let duration = Duration::from_secs_f64(request.duration_ms.max(0.0) / 1000.0);
            let start = request
                .started_at
                .as_deref()
                .and_then(|at| humantime::parse_rfc3339(at).ok())
                .unwrap_or_else(|| now.checked_sub(duration).unwrap_or(now));
            let mut attributes = vec![
                KeyValue::new("http.request.method", request.method.clone()),
                KeyValue::new("url.full", request.url.clone()),
                KeyValue::new("wasaga.run_id", run.to_string()),
                KeyValue::new("wasaga.call", node.to_string()),
            ];
            if let Some(status) = request.status {
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
            }
            let status = match (&request.error, request.status) {
                (Some(error), _) => {
                    attributes.push(KeyValue::new("error.type", "_OTHER"));
                    Status::error(error.clone())
                }
                (None, Some(code)) if code >= 400 => {
                    attributes.push(KeyValue::new("error.type", code.to_string()));
                    Status::error(format!("status {code}"))
                }
                _ => Status::Unset,
            };
            self.emit(
                Place {
                    context: &context,
                    id: context.request_span(run, node, action, attempt, index as u32 + 1),
                    parent: Some(context.call_span(run, node, action, attempt)),
                    remote_parent: false,
                },
                request.method.clone(),
                SpanKind::Client,
                (start, start + duration),
                attributes,
                status,
            );
        }
    }

    fn run_ended(&self, run: &str, state: RunState, status: RunStatus) {
        let context = state.context;
        let mut attributes = vec![
            KeyValue::new("wasaga.run_id", run.to_string()),
            KeyValue::new("wasaga.workflow", state.workflow.clone()),
            KeyValue::new("wasaga.status", status.as_str()),
        ];
        let span_status = match status {
            RunStatus::Done => Status::Ok,
            RunStatus::Cancelled => Status::Unset,
            _ => {
                let why = state.error.unwrap_or_else(|| "the run failed".to_string());
                attributes.push(KeyValue::new("error.type", status.as_str()));
                Status::error(format!("{}: {why}", status.as_str()))
            }
        };
        self.emit(
            Place {
                context: &context,
                id: context.run_span(run),
                parent: context.parent,
                remote_parent: context.parent.is_some(),
            },
            format!("run {}", state.workflow),
            SpanKind::Internal,
            (state.created, SystemTime::now()),
            attributes,
            span_status,
        );
    }
}

impl Observer for RunSpans {
    fn committed(&self, run: &str, records: &[(u64, RecordKind)]) {
        self.follow(run);
        let now = SystemTime::now();
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Some(state)) = runs.get_mut(run) else {
            return;
        };
        for (_, record) in records {
            match record {
                RecordKind::Started {
                    node,
                    step,
                    action,
                    attempt,
                    ..
                } => {
                    state
                        .open
                        .insert((node.clone(), *action, *attempt), (now, step.clone()));
                }
                RecordKind::Requests {
                    node,
                    action,
                    attempt,
                    requests,
                } => self.requests_made(run, state, (node, *action, *attempt), requests),
                RecordKind::Finished {
                    node,
                    action,
                    attempt,
                    record,
                } => self.attempt_ended(run, state, (node.clone(), *action, *attempt), record),
                RecordKind::Compensating(error) => state.error = Some(describe(error)),
                _ => {}
            }
        }
    }

    fn status(&self, run: &str, status: RunStatus) {
        match status {
            status if status.is_final() => {
                self.follow(run);
                let state = self.with_runs(|runs| runs.remove(run)).flatten();
                if let Some(state) = state {
                    self.run_ended(run, state, status);
                }
            }
            // A parked run holds nothing here either: a later resume (on any
            // host) reads it back from the journal.
            RunStatus::Waiting | RunStatus::Queued => {
                self.with_runs(|runs| runs.remove(run));
            }
            _ => {}
        }
    }
}

/// A run's error as its span's status says it: the step, its kind, the message.
fn describe(error: &RunError) -> String {
    match &error.step {
        Some(step) => format!(
            "step '{step}' failed ({}): {}",
            error.kind.as_str(),
            error.message
        ),
        None => format!("{}: {}", error.kind.as_str(), error.message),
    }
}

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}
