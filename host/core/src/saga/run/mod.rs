//! Executes one run of a workflow: forward through the flow ([`forward`]),
//! then, on failure, backward through the compensation stack
//! ([`compensate`]), each call through one attempt loop ([`attempt`]). Every
//! transition goes to the run's [`Recorder`] before the next action; a run
//! resumed over its [`History`] replays settled calls instead of calling them
//! again. This file is the run driver and the state the phases share.

mod attempt;
mod compensate;
mod forward;
mod sleep;

use attempt::CallTarget;
pub use sleep::rfc3339;

/// How long a call attempt may run when its step sets no `timeout`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::json;

use super::plan::{Call, Entry, OnFailure, Sleep, StepPolicy, Workflow};
use super::record::{CallRecord, CallStart, History, NoRecorder, RecordError, Recorder};
use super::report::{CompensationFailure, Outcome, RunError, RunReport, RunStatus, TraceEntry};
use super::step::{
    Action, Event, FailureKind, Invoked, OutboundRequest, RunEvents, Step, StepCall, StepFailure,
};
use crate::expr::{EvalError, Expr, Scope};
use crate::json::Json;

/// A workflow bound to the steps it calls: runs it any number of times.
#[derive(Clone)]
pub struct Saga {
    workflow: Arc<Workflow>,
    steps: Arc<[Arc<dyn Step>]>,
}

/// What starts a run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The run's id.
    pub run_id: String,
    /// The transaction id (often the run id).
    pub transaction_id: String,
    /// The workflow input.
    pub input: Json,
    /// Free-form metadata handed to every step.
    pub metadata: Json,
    /// The trace the run's spans belong to, passed on to its outbound
    /// requests (`traceparent`).
    pub trace_context: Option<crate::telemetry::TraceContext>,
}

impl RunRequest {
    /// A request with a new UUIDv7 as run and transaction id.
    pub fn new(input: Json) -> RunRequest {
        let id = uuid::Uuid::now_v7().to_string();
        RunRequest {
            run_id: id.clone(),
            transaction_id: id,
            input,
            metadata: Json::from_value(json!({})),
            trace_context: None,
        }
    }
}

/// Where a run records its transitions and what it already recorded.
pub struct Durability {
    /// Receives every transition.
    pub recorder: Arc<dyn Recorder>,
    /// The run's past, when resuming.
    pub history: History,
    /// Time the run has already spent before this process (for the workflow timeout).
    pub elapsed: Duration,
    /// Stop at the first `background` step that has not started, leaving the
    /// run to a later `resume` (what `host run` does).
    pub detach_background: bool,
    /// Cancel the run: no new call starts, and what ran is compensated.
    pub cancel: bool,
    /// Cancels the run while it executes: an invoke in flight is
    /// interrupted (and fails as `cancelled`), no new one starts, and what
    /// ran is compensated.
    pub interrupt: super::CancelSignal,
    /// The recorder keeps the run's last records for whoever records the
    /// run's end (the host writes them with it, in one commit): the run
    /// does not flush them itself.
    pub end_writes_last_records: bool,
    /// The clock of the run's durable times (sleeps, answer deadlines).
    pub clock: super::Clock,
}

impl Default for Durability {
    fn default() -> Durability {
        Durability {
            recorder: Arc::new(NoRecorder::default()),
            history: History::default(),
            elapsed: Duration::ZERO,
            detach_background: false,
            cancel: false,
            interrupt: super::CancelSignal::default(),
            end_writes_last_records: false,
            clock: super::Clock::system(),
        }
    }
}

impl Saga {
    /// Binds `workflow` to its steps: `steps[i]` implements `workflow.steps[i]`.
    ///
    /// # Panics
    /// If the counts differ: that is a bug in the caller.
    pub fn new(workflow: Arc<Workflow>, steps: Vec<Arc<dyn Step>>) -> Saga {
        assert_eq!(
            workflow.steps.len(),
            steps.len(),
            "one implementation per declared step"
        );
        Saga {
            workflow,
            steps: steps.into(),
        }
    }

    /// The workflow this saga runs.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// The implementation of step `index`.
    pub fn step(&self, index: usize) -> Arc<dyn Step> {
        self.steps[index].clone()
    }

    /// The workflow, shared (to bind it to other step implementations).
    pub fn shared_workflow(&self) -> Arc<Workflow> {
        self.workflow.clone()
    }

    /// Runs the workflow in memory to its end.
    pub async fn run(&self, request: RunRequest) -> RunReport {
        self.run_durably(request, Durability::default()).await
    }

    /// Runs (or resumes) the workflow to its end: `done`, or compensated
    /// (`reverted` or `failed`), recording every transition.
    pub async fn run_durably(&self, request: RunRequest, durability: Durability) -> RunReport {
        let started = Instant::now();
        let deadline = self
            .workflow
            .timeout
            .map(|t| started + t.saturating_sub(durability.elapsed));
        let events = Arc::new(RunEvents::recorded(
            durability.recorder.clone(),
            &durability.history.events,
        ));
        let fresh = durability.history.is_empty();
        let run = Arc::new(Run {
            saga: self.clone(),
            workflow_name: self.workflow.name.as_str().into(),
            run_id: request.run_id.as_str().into(),
            transaction_id: request.transaction_id.as_str().into(),
            metadata: request.metadata,
            trace_context: request.trace_context,
            started,
            deadline,
            trace: Mutex::default(),
            completed: Mutex::default(),
            ignored: Mutex::default(),
            events,
            seq: AtomicU64::new(durability.history.last_seq),
            fence: durability.recorder.fence(),
            recorder: durability.recorder,
            history: durability.history,
            detach_background: durability.detach_background,
            cancel: durability.cancel,
            interrupt: durability.interrupt,
            flush_at_end: !durability.end_writes_last_records,
            wake_at: AtomicI64::new(i64::MAX),
            clock: durability.clock,
        });
        if fresh {
            run.lifecycle("run.started", request.input.clone(), None);
        }
        let mut scope = Scope::with_input(request.input);
        let forward = match run
            .clone()
            .exec(self.workflow.flow.clone(), &mut scope)
            .await
        {
            Ok(()) | Err(Stop::Skip) | Err(Stop::SkipTo(_)) if run.cancel => {
                Err(Failure::cancelled())
            }
            Ok(()) | Err(Stop::Skip) | Err(Stop::SkipTo(_)) => {
                run.output(&scope).map_err(Paused::Not)
            }
            Err(Stop::Fail(failure)) => Err(Paused::Not(failure)),
            Err(Stop::Pause(pause)) => Err(Paused::Yes(pause)),
        };
        let (status, output, error) = match forward {
            // Another host took the run over: it continues the run from the
            // journal (this one compensates nothing and writes nothing more).
            Err(Paused::Not(failure)) if run.recorder.lost() => {
                (RunStatus::Running, None, Some(failure.into_run_error()))
            }
            Err(Paused::Yes(pause)) => {
                let status = match pause {
                    Pause::Waiting => RunStatus::Waiting,
                    Pause::Detached => RunStatus::Running,
                };
                (status, None, None)
            }
            Ok(output) => {
                run.lifecycle("run.done", output.clone(), None);
                (RunStatus::Done, Some(output), None)
            }
            Err(Paused::Not(failure)) => {
                let cancelled = failure.error.kind == FailureKind::Cancelled;
                let mut error = failure.into_run_error();
                run.lifecycle("run.compensating", to_json(&error), None);
                if let Err(e) = run.recorder.compensating(&error) {
                    tracing::error!("{e}");
                }
                if run.recorder.lost() {
                    // Learnt as the compensation was to be recorded (a call
                    // of this host had its writes refused, say): the new
                    // owner compensates.
                    (RunStatus::Running, None, Some(error))
                } else {
                    error.compensation_failures = run.compensate_all().await;
                    let status = match (cancelled, error.compensation_failures.is_empty()) {
                        (_, false) => RunStatus::Failed,
                        (true, true) => RunStatus::Cancelled,
                        (false, true) => RunStatus::Reverted,
                    };
                    run.lifecycle(&format!("run.{}", status.as_str()), to_json(&error), None);
                    (status, None, Some(error))
                }
            }
        };
        if run.flush_at_end
            && let Err(e) = run.recorder.flush()
        {
            tracing::error!("{e}");
        }
        // The run could not be recorded to its end (a compensation's start
        // or the last records failed to reach the journal, or the lease was
        // lost on the way): it is not over. Whoever resumes it finishes it
        // from what the journal holds, so no final status is claimed here.
        let (status, output) = if run.recorder.lost() {
            (RunStatus::Running, None)
        } else {
            (status, output)
        };
        let errors = std::mem::take(&mut *run.ignored.lock().expect("ignored lock"));
        RunReport {
            run: request.run_id,
            workflow: self.workflow.name.clone(),
            transaction_id: request.transaction_id,
            status,
            partial: status == RunStatus::Done && !errors.is_empty(),
            output,
            error,
            errors,
            trace: std::mem::take(&mut *run.trace.lock().expect("trace lock")),
            events: run.events.snapshot(),
            all_events: run.events.all(),
            duration_ms: ms(run.started.elapsed()),
            wake_at: if status == RunStatus::Waiting {
                run.wake_at()
            } else {
                None
            },
            rerun_of: None,
            reruns: Vec::new(),
            tick: None,
            trace_id: run
                .trace_context
                .map(|c| crate::telemetry::hex(&c.trace_id)),
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Json {
    Json::from_value(serde_json::to_value(value).unwrap_or_default())
}

/// Why a run paused (it is not finished: a later resume continues it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// An async step waits for an outside answer.
    Waiting,
    /// A background step was left for a later resume.
    Detached,
}

/// The end of the forward pass when it did not produce an output.
enum Paused {
    Yes(Pause),
    Not(Failure),
}

impl From<Failure> for Paused {
    fn from(failure: Failure) -> Paused {
        Paused::Not(failure)
    }
}

/// Why the forward pass stopped.
enum Stop {
    /// The run pauses (no compensation).
    Pause(Pause),
    /// A failure: the run compensates.
    Fail(Failure),
    /// A step failed with `on-permanent-failure = "skip"`.
    Skip,
    /// A step failed with `on-permanent-failure = "skip-to:NAME"`.
    SkipTo(String),
}

impl Stop {
    /// For messages.
    fn describe(&self) -> String {
        match self {
            Stop::Pause(pause) => format!("paused ({pause:?})"),
            Stop::Fail(failure) => failure.error.to_string(),
            Stop::Skip => "skipped".into(),
            Stop::SkipTo(target) => format!("skipped to {target}"),
        }
    }
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Fail(failure)
    }
}

impl From<EvalError> for Stop {
    fn from(err: EvalError) -> Stop {
        Stop::Fail(err.into())
    }
}

/// A failure of the forward pass.
struct Failure {
    step: Option<String>,
    error: StepFailure,
}

impl Failure {
    fn cancelled() -> Paused {
        Paused::Not(Failure {
            step: None,
            error: StepFailure::new(FailureKind::Cancelled, "the run was cancelled").permanent(),
        })
    }

    fn into_run_error(self) -> RunError {
        RunError {
            step: self.step,
            kind: self.error.kind,
            message: self.error.message,
            permanent: self.error.permanent,
            compensation_failures: Vec::new(),
        }
    }
}

impl From<EvalError> for Failure {
    fn from(err: EvalError) -> Failure {
        Failure {
            step: None,
            error: StepFailure::new(FailureKind::Expression, err.to_string()).permanent(),
        }
    }
}

impl From<RecordError> for Failure {
    fn from(err: RecordError) -> Failure {
        let kind = match err {
            RecordError::Cancelled => FailureKind::Cancelled,
            RecordError::Failed(_) | RecordError::LeaseLost(_) => FailureKind::Host,
        };
        Failure {
            step: None,
            error: StepFailure::new(kind, err.to_string()).permanent(),
        }
    }
}

impl From<RecordError> for Stop {
    fn from(err: RecordError) -> Stop {
        Stop::Fail(err.into())
    }
}

/// A call that may need compensating: pushed when it completes (or finally
/// fails), ordered by its record's sequence number.
struct Completed {
    step: usize,
    node: Arc<str>,
    policy: StepPolicy,
    data: Option<Json>,
    seq: u64,
}

/// The state of one run.
struct Run {
    saga: Saga,
    workflow_name: Arc<str>,
    run_id: Arc<str>,
    transaction_id: Arc<str>,
    metadata: Json,
    trace_context: Option<crate::telemetry::TraceContext>,
    started: Instant,
    deadline: Option<Instant>,
    trace: Mutex<Vec<TraceEntry>>,
    /// The compensation stack.
    completed: Mutex<Vec<Completed>>,
    /// Failures that did not stop the run (`continue`, `skip`, `skip-to`).
    ignored: Mutex<Vec<RunError>>,
    events: Arc<RunEvents>,
    /// Numbers records when the recorder does not.
    seq: AtomicU64,
    recorder: Arc<dyn Recorder>,
    history: History,
    detach_background: bool,
    cancel: bool,
    /// Set when the run is cancelled while it executes.
    interrupt: super::CancelSignal,
    /// The lease its calls' writes are fenced on (journaled runs).
    fence: Option<super::Fence>,
    /// Whether the run flushes its last records itself (see
    /// [`Durability::end_writes_last_records`]).
    flush_at_end: bool,
    /// The earliest time (unix ms) a waiting call of the paused run waits
    /// for; `i64::MAX` for none.
    wake_at: AtomicI64,
    clock: super::Clock,
}

impl Run {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Emits an event of the run (recorded, and delivered to subscribers later).
    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// A lifecycle event (`run.started`, `step.completed`, ...).
    fn lifecycle(&self, name: &str, data: Json, step: Option<&Arc<str>>) {
        self.emit(Event {
            name: name.to_string(),
            data,
            step: step.map(|s| s.to_string()),
            lifecycle: true,
        });
    }

    fn output(&self, scope: &Scope) -> Result<Json, Failure> {
        let output = output_of(self.saga.workflow.output.as_ref(), scope)?;
        if let Some(check) = &self.saga.workflow.output_check {
            check.check(&output).map_err(|violations| Failure {
                step: None,
                error: StepFailure::new(
                    FailureKind::InvalidOutput,
                    format!(
                        "the workflow's output does not match its output-schema: {}",
                        violations.join("; ")
                    ),
                )
                .permanent(),
            })?;
        }
        Ok(output)
    }
}

/// An entry's input: its expression over `scope`, or the workflow input.
fn eval_input(expr: Option<&Expr>, scope: &Scope) -> Result<Json, EvalError> {
    match expr {
        Some(expr) => expr.eval(scope),
        None => Ok(scope.get("input").cloned().unwrap_or_else(Json::null)),
    }
}

/// The stop that wins when several branches stop: a failure, then a pause,
/// then a skip.
fn worse(current: Option<Stop>, new: Stop) -> Option<Stop> {
    let rank = |stop: &Stop| match stop {
        Stop::Fail(_) => 3,
        Stop::Pause(_) => 2,
        Stop::Skip | Stop::SkipTo(_) => 1,
    };
    match current {
        Some(current) if rank(&current) >= rank(&new) => Some(current),
        _ => Some(new),
    }
}

/// Binds the names of `entries` that are still unbound to null (skipped).
fn bind_null(entries: &[Entry], scope: &mut Scope) {
    for entry in entries {
        for name in entry.binds() {
            if scope.get(&name).is_none() {
                scope.bind(name, Json::null());
            }
        }
    }
}

/// Copies into `scope` what a branch bound or rebound.
fn merge(scope: &mut Scope, branch: &Scope) {
    let changed: Vec<(String, Json)> = branch
        .iter()
        .filter(|(name, value)| !scope.get(name).is_some_and(|old| old.same(value)))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for (name, value) in changed {
        scope.bind(name, value);
    }
}

fn crashed(join_error: tokio::task::JoinError) -> Stop {
    Stop::Fail(Failure {
        step: None,
        error: StepFailure::new(
            FailureKind::Host,
            format!("a concurrent branch crashed: {join_error}"),
        )
        .permanent(),
    })
}

/// A workflow's output: its `[output]` expression, or every bound name.
fn output_of(expr: Option<&Expr>, scope: &Scope) -> Result<Json, Failure> {
    match expr {
        Some(expr) => Ok(expr.eval(scope)?),
        None => {
            let map: serde_json::Map<String, serde_json::Value> = scope
                .iter()
                .filter(|(name, _)| name.as_str() != "input")
                .map(|(name, value)| (name.clone(), value.value().clone()))
                .collect();
            Ok(Json::from_value(serde_json::Value::Object(map)))
        }
    }
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}
