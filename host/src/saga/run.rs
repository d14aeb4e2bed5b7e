//! Executes one run of a workflow: forward through the flow, then, on failure,
//! backward through the compensation stack. Every transition goes to the
//! run's [`Recorder`] before the next action; a run resumed over its
//! [`History`] replays settled calls instead of calling them again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::json;

use super::plan::{Call, Entry, OnFailure, StepPolicy, Workflow};
use super::record::{CallRecord, CallStart, History, NoRecorder, RecordError, Recorder};
use super::report::{CompensationFailure, Outcome, RunError, RunReport, RunStatus, TraceEntry};
use super::step::{Action, Event, FailureKind, Invoked, RunEvents, Step, StepCall, StepFailure};
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
}

impl Default for Durability {
    fn default() -> Durability {
        Durability {
            recorder: Arc::new(NoRecorder::default()),
            history: History::default(),
            elapsed: Duration::ZERO,
            detach_background: false,
            cancel: false,
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
        let events = Arc::new(RunEvents::default());
        for event in &durability.history.events {
            events.emit(event.clone());
        }
        let fresh = durability.history.is_empty();
        let run = Arc::new(Run {
            saga: self.clone(),
            workflow_name: self.workflow.name.as_str().into(),
            run_id: request.run_id.as_str().into(),
            transaction_id: request.transaction_id.as_str().into(),
            metadata: request.metadata,
            started,
            deadline,
            trace: Mutex::default(),
            completed: Mutex::default(),
            ignored: Mutex::default(),
            events,
            seq: AtomicU64::new(durability.history.last_seq),
            recorder: durability.recorder,
            history: durability.history,
            detach_background: durability.detach_background,
            cancel: durability.cancel,
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
                error.compensation_failures = run.compensate_all().await;
                let status = match (cancelled, error.compensation_failures.is_empty()) {
                    (_, false) => RunStatus::Failed,
                    (true, true) => RunStatus::Cancelled,
                    (false, true) => RunStatus::Reverted,
                };
                run.lifecycle(&format!("run.{}", status.as_str()), to_json(&error), None);
                (status, None, Some(error))
            }
        };
        if let Err(e) = run.recorder.flush() {
            tracing::error!("{e}");
        }
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
            RecordError::Failed(_) => FailureKind::Host,
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
}

impl Run {
    /// Runs `entries` in order, binding names into `scope`. A skip binds the
    /// names of the entries it passes over to null.
    fn exec(
        self: Arc<Self>,
        entries: Arc<[Entry]>,
        scope: &mut Scope,
    ) -> BoxFuture<'_, Result<(), Stop>> {
        Box::pin(async move {
            let mut index = 0;
            while index < entries.len() {
                match self.clone().exec_entry(entries.clone(), index, scope).await {
                    Ok(()) => index += 1,
                    Err(Stop::SkipTo(target)) => {
                        let later = entries[index + 1..]
                            .iter()
                            .position(|e| e.binds().contains(&target));
                        let resume = later.map_or(entries.len(), |offset| index + 1 + offset);
                        bind_null(&entries[index..resume], scope);
                        if resume == entries.len() {
                            return Err(Stop::SkipTo(target));
                        }
                        index = resume;
                    }
                    Err(Stop::Skip) => {
                        bind_null(&entries[index..], scope);
                        return Err(Stop::Skip);
                    }
                    Err(fail) => return Err(fail),
                }
            }
            Ok(())
        })
    }

    fn exec_entry(
        self: Arc<Self>,
        entries: Arc<[Entry]>,
        index: usize,
        scope: &mut Scope,
    ) -> BoxFuture<'_, Result<(), Stop>> {
        Box::pin(async move { self.exec_entry_inner(&entries[index], scope).await })
    }

    async fn exec_entry_inner(
        self: &Arc<Self>,
        entry: &Entry,
        scope: &mut Scope,
    ) -> Result<(), Stop> {
        match entry {
            Entry::Run(call) => {
                let input = self.input_of(call, call.input.as_ref(), scope)?;
                let node: Arc<str> = call.node.as_str().into();
                let output = self.call_with_policy(call, &node, input).await?;
                if let Some(name) = &call.bind {
                    scope.bind(name.clone(), output);
                }
            }
            Entry::Parallel(branches) => {
                self.clone().exec_parallel(branches.clone(), scope).await?
            }
            Entry::When {
                condition,
                then,
                binds,
            } => {
                if condition.eval_bool(scope)? {
                    self.clone().exec(then.clone(), scope).await?;
                } else {
                    for name in binds {
                        scope.bind(name.clone(), Json::null());
                    }
                }
            }
            Entry::Nested {
                flow,
                output,
                input,
                bind,
                ..
            } => {
                let input = eval_input(input.as_ref(), scope)?;
                let mut inner = Scope::with_input(input);
                // A skip ends the nested workflow, not its parent.
                match self.clone().exec(flow.clone(), &mut inner).await {
                    Ok(()) | Err(Stop::Skip) | Err(Stop::SkipTo(_)) => {}
                    Err(fail) => return Err(fail),
                }
                let value = output_of(output.as_ref(), &inner)?;
                if let Some(name) = bind {
                    scope.bind(name.clone(), value);
                }
            }
            Entry::ForEach {
                items,
                call,
                concurrency,
            } => {
                let outputs = self
                    .clone()
                    .exec_for_each(items, call, *concurrency, scope)
                    .await?;
                if let Some(name) = &call.bind {
                    scope.bind(name.clone(), outputs);
                }
            }
            Entry::Hook {
                name,
                input,
                handlers,
                bind,
            } => {
                let input = eval_input(input.as_ref(), scope)?;
                self.emit(Event {
                    name: format!("hook.{name}"),
                    data: input.clone(),
                    step: None,
                    lifecycle: false,
                });
                let mut outputs = Vec::with_capacity(handlers.len());
                for handler in handlers {
                    let node: Arc<str> = handler.node.as_str().into();
                    let output = self.call_with_policy(handler, &node, input.clone()).await?;
                    outputs.push(output.value().clone());
                }
                if let Some(name) = bind {
                    scope.bind(
                        name.clone(),
                        Json::from_value(serde_json::Value::Array(outputs)),
                    );
                }
            }
            Entry::Transform { expr, bind } => {
                let value = expr.eval(scope)?;
                scope.bind(bind.clone(), value);
            }
        }
        Ok(())
    }

    /// The input of a call (see [`eval_input`]); a failure names the call.
    fn input_of(&self, call: &Call, expr: Option<&Expr>, scope: &Scope) -> Result<Json, Stop> {
        eval_input(expr, scope).map_err(|e| {
            Stop::Fail(Failure {
                step: Some(call.node.clone()),
                ..Failure::from(e)
            })
        })
    }

    /// Invokes a call and applies its `on-permanent-failure` policy: the
    /// output, or null when the failure does not stop the flow.
    async fn call_with_policy(
        &self,
        call: &Call,
        node: &Arc<str>,
        input: Json,
    ) -> Result<Json, Stop> {
        match self.invoke(call, node, input).await {
            Ok(Invoked::Done { output, .. }) => Ok(output),
            Ok(Invoked::Skip) => Ok(Json::null()),
            Err(Stop::Fail(failure))
                if matches!(
                    failure.error.kind,
                    FailureKind::Host | FailureKind::Cancelled
                ) || failure.step.is_none() =>
            {
                Err(Stop::Fail(failure))
            }
            Err(Stop::Fail(failure)) => match &call.policy.on_permanent_failure {
                OnFailure::Fail => Err(Stop::Fail(failure)),
                policy => {
                    tracing::warn!(step = %node, "step failed; the run goes on ({policy:?}): {}", failure.error);
                    self.ignored
                        .lock()
                        .expect("ignored lock")
                        .push(failure.into_run_error());
                    match policy {
                        OnFailure::Skip => Err(Stop::Skip),
                        OnFailure::SkipTo(target) => Err(Stop::SkipTo(target.clone())),
                        _ => Ok(Json::null()),
                    }
                }
            },
            Err(other) => Err(other),
        }
    }

    /// Starts every branch at once on the runtime, waits for all of them
    /// (running siblings finish even when one fails), then merges their names.
    async fn exec_parallel(
        self: Arc<Self>,
        branches: Arc<[Entry]>,
        scope: &mut Scope,
    ) -> Result<(), Stop> {
        let handles: Vec<_> = (0..branches.len())
            .map(|index| {
                let run = self.clone();
                let branches = branches.clone();
                let mut branch_scope = scope.clone();
                tokio::spawn(async move {
                    let result = run.exec_entry(branches, index, &mut branch_scope).await;
                    (result, branch_scope)
                })
            })
            .collect();
        let mut stop = None;
        for handle in handles {
            let (result, branch_scope) = match handle.await {
                Ok(done) => done,
                Err(join_error) => (Err(crashed(join_error)), Scope::default()),
            };
            merge(scope, &branch_scope);
            if let Err(err) = result {
                stop = worse(stop, err);
            }
        }
        stop.map_or(Ok(()), Err)
    }

    /// One call per item, at most `concurrency` in flight; outputs in item
    /// order. After a stopping failure no new item starts; running ones finish.
    async fn exec_for_each(
        self: Arc<Self>,
        items: &Expr,
        call: &Arc<Call>,
        concurrency: usize,
        scope: &Scope,
    ) -> Result<Json, Stop> {
        let list = items.eval(scope)?;
        let Some(values) = list.value().as_array().cloned() else {
            return Err(Stop::Fail(Failure {
                step: Some(call.node.clone()),
                error: StepFailure::new(
                    FailureKind::Expression,
                    format!(
                        "`for-each = \"{}\"` gave {list}, not a list",
                        items.source()
                    ),
                )
                .permanent(),
            }));
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let stopped = Arc::new(AtomicBool::new(false));
        let call = call.clone();
        let mut handles = Vec::with_capacity(values.len());
        for (index, item) in values.into_iter().enumerate() {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            let mut item_scope = scope.clone();
            item_scope.bind("item", Json::from_value(item));
            item_scope.bind("index", Json::from_value(json!(index)));
            let run = self.clone();
            let call = call.clone();
            let stopped = stopped.clone();
            handles.push(tokio::spawn(async move {
                let _permit = permit;
                let node: Arc<str> = format!("{}[{index}]", call.node).into();
                let result = match run.input_of(&call, call.input.as_ref(), &item_scope) {
                    Ok(input) => run.call_with_policy(&call, &node, input).await,
                    Err(stop) => Err(stop),
                };
                if result.is_err() {
                    stopped.store(true, Ordering::SeqCst);
                }
                result
            }));
        }
        let mut outputs = Vec::with_capacity(handles.len());
        let mut stop = None;
        for handle in handles {
            match handle.await.unwrap_or_else(|e| Err(crashed(e))) {
                Ok(output) => outputs.push(output.value().clone()),
                Err(err) => {
                    outputs.push(serde_json::Value::Null);
                    stop = worse(stop, err);
                }
            }
        }
        match stop {
            Some(stop) => Err(stop),
            None => Ok(Json::from_value(serde_json::Value::Array(outputs))),
        }
    }

    /// Invokes a step with its retry policy; pushes it on the compensation
    /// stack when it completes or finally fails. A call the history settled
    /// is not called again.
    async fn invoke(&self, call: &Call, node: &Arc<str>, input: Json) -> Result<Invoked, Stop> {
        let policy = &call.policy;
        let mut attempt = 1;
        let recorded = self.history.call(node, Action::Invoke);
        if let Some((seq, record)) = recorded.and_then(|r| r.settled.as_ref()) {
            return self
                .settle(call, node, *seq, record.clone(), false)
                .map_err(Stop::Fail);
        }
        let waiting = recorded.and_then(|r| r.waiting.as_ref());
        if self.cancel {
            // An async step that already did its work is undone with the rest.
            if let Some((seq, output)) = waiting {
                self.push_completed(call.step, node, policy, Some(output.clone()), *seq);
            }
            return Err(Stop::Fail(Failure {
                step: Some(node.to_string()),
                error: StepFailure::new(FailureKind::Cancelled, "the run was cancelled")
                    .permanent(),
            }));
        }
        if waiting.is_some() {
            return Err(Stop::Pause(Pause::Waiting));
        }
        match recorded {
            Some(recorded) => attempt = recorded.attempts + 1,
            None if policy.background && self.detach_background => {
                return Err(Stop::Pause(Pause::Detached));
            }
            None => {}
        }
        let step = &self.saga.steps[call.step];
        loop {
            self.check_deadline(node)?;
            self.recorder.call_started(&CallStart {
                node,
                step: &self.saga.workflow.steps[call.step].name,
                action: Action::Invoke,
                attempt,
                input: Some(&input),
            })?;
            let context = self.call_context(call.step, node, Action::Invoke, attempt, policy);
            let started = Instant::now();
            let result = with_timeout(policy, step.invoke(&input, &context)).await;
            let last = match &result {
                Err(e) => e.permanent || attempt > policy.retries.max,
                Ok(_) => true,
            };
            let record = match &result {
                // An async step's invoke starts the work; the answer comes later.
                Ok(Invoked::Done { output, .. }) if policy.asynchronous => CallRecord::Waiting {
                    output: output.clone(),
                },
                Ok(Invoked::Done {
                    output,
                    compensation,
                }) => CallRecord::Done {
                    output: output.clone(),
                    compensation: compensation.clone(),
                },
                Ok(Invoked::Skip) => CallRecord::Skipped,
                Err(error) => CallRecord::Failed {
                    error: error.clone(),
                    last,
                },
            };
            let (outcome, error) = match &result {
                Ok(Invoked::Done { .. }) => (Outcome::Ok, None),
                Ok(Invoked::Skip) => (Outcome::Skipped, None),
                Err(e) => (Outcome::Error, Some(e.clone())),
            };
            self.record(
                call.step,
                node,
                Action::Invoke,
                attempt,
                outcome,
                Some(input.clone()),
                error,
                started,
            );
            let seq = match self
                .recorder
                .call_finished(node, Action::Invoke, attempt, &record)
            {
                Ok(seq) => seq,
                Err(e) => {
                    // The call may have done its work: compensate it with the rest.
                    if let Some(data) = record.compensation_data() {
                        self.push_completed(call.step, node, policy, Some(data), self.next_seq());
                    }
                    return Err(e.into());
                }
            };
            if let CallRecord::Waiting { .. } = record {
                return Err(Stop::Pause(Pause::Waiting));
            }
            if last {
                return self
                    .settle(call, node, seq, record, true)
                    .map_err(Stop::Fail);
            }
            tokio::time::sleep(policy.retries.delay_after(attempt)).await;
            attempt += 1;
        }
    }

    /// A call's settled outcome, live or replayed from the history: pushes
    /// the compensation stack, and emits the step's lifecycle event when live.
    fn settle(
        &self,
        call: &Call,
        node: &Arc<str>,
        seq: u64,
        record: CallRecord,
        live: bool,
    ) -> Result<Invoked, Failure> {
        self.seq.fetch_max(seq, Ordering::SeqCst);
        match record {
            CallRecord::Done {
                output,
                compensation,
            } => {
                let data = compensation.unwrap_or_else(|| output.clone());
                self.push_completed(call.step, node, &call.policy, Some(data), seq);
                if live {
                    let data = Json::object(&[("step", &Json::string(node)), ("output", &output)]);
                    self.lifecycle("step.completed", data, Some(node));
                }
                Ok(Invoked::Done {
                    output,
                    compensation: None,
                })
            }
            CallRecord::Skipped => Ok(Invoked::Skip),
            CallRecord::Failed { error, .. } => {
                self.push_completed(
                    call.step,
                    node,
                    &call.policy,
                    error.compensation_data.clone(),
                    seq,
                );
                if live {
                    let data = json!({"step": &**node, "error": error});
                    self.lifecycle("step.failed", Json::from_value(data), Some(node));
                }
                Err(Failure {
                    step: Some(node.to_string()),
                    error,
                })
            }
            CallRecord::Compensated | CallRecord::Waiting { .. } => Err(Failure {
                step: Some(node.to_string()),
                error: StepFailure::new(
                    FailureKind::Host,
                    "the journal holds an unexpected record for this invoke",
                )
                .permanent(),
            }),
        }
    }

    fn check_deadline(&self, node: &str) -> Result<(), Failure> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                let timeout = self.saga.workflow.timeout.unwrap_or_default();
                Err(Failure {
                    step: None,
                    error: StepFailure::new(
                        FailureKind::Timeout,
                        format!(
                            "the workflow's timeout of {} passed before step '{node}' could start",
                            humantime::format_duration(timeout)
                        ),
                    )
                    .permanent(),
                })
            }
            _ => Ok(()),
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn push_completed(
        &self,
        step: usize,
        node: &Arc<str>,
        policy: &StepPolicy,
        data: Option<Json>,
        seq: u64,
    ) {
        if policy.compensate {
            self.completed.lock().expect("stack lock").push(Completed {
                step,
                node: node.clone(),
                policy: policy.clone(),
                data,
                seq,
            });
        }
    }

    /// Compensates the stack in reverse order of completion. A compensation
    /// that still fails after its retries is reported; the others still run.
    async fn compensate_all(&self) -> Vec<CompensationFailure> {
        let mut stack = std::mem::take(&mut *self.completed.lock().expect("stack lock"));
        stack.sort_by_key(|entry| std::cmp::Reverse(entry.seq));
        let mut failures = Vec::new();
        for entry in stack {
            if let Err(error) = self.compensate_one(&entry).await {
                failures.push(CompensationFailure {
                    step: entry.node.to_string(),
                    error,
                });
            }
        }
        failures
    }

    async fn compensate_one(&self, entry: &Completed) -> Result<(), StepFailure> {
        let mut attempt = 1;
        if let Some(recorded) = self.history.call(&entry.node, Action::Compensate) {
            match &recorded.settled {
                Some((_, CallRecord::Failed { error, .. })) => return Err(error.clone()),
                Some(_) => return Ok(()),
                None => attempt = recorded.attempts + 1,
            }
        }
        let step = &self.saga.steps[entry.step];
        loop {
            if let Err(e) = self.recorder.call_started(&CallStart {
                node: &entry.node,
                step: &self.saga.workflow.steps[entry.step].name,
                action: Action::Compensate,
                attempt,
                input: entry.data.as_ref(),
            }) {
                tracing::error!("{e}");
            }
            let context = self.call_context(
                entry.step,
                &entry.node,
                Action::Compensate,
                attempt,
                &entry.policy,
            );
            let started = Instant::now();
            let result = with_timeout(
                &entry.policy,
                step.compensate(entry.data.as_ref(), &context),
            )
            .await;
            let last = match &result {
                Ok(()) => true,
                Err(e) => e.permanent || attempt > entry.policy.retries.max,
            };
            let (outcome, error, record) = match &result {
                Ok(()) => (Outcome::Ok, None, CallRecord::Compensated),
                Err(e) => (
                    Outcome::Error,
                    Some(e.clone()),
                    CallRecord::Failed {
                        error: e.clone(),
                        last,
                    },
                ),
            };
            self.record(
                entry.step,
                &entry.node,
                Action::Compensate,
                attempt,
                outcome,
                entry.data.clone(),
                error,
                started,
            );
            if let Err(e) =
                self.recorder
                    .call_finished(&entry.node, Action::Compensate, attempt, &record)
            {
                tracing::error!("{e}");
            }
            match result {
                Ok(()) => return Ok(()),
                Err(error) if last => return Err(error),
                Err(_) => {
                    tokio::time::sleep(entry.policy.retries.delay_after(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    fn call_context(
        &self,
        step: usize,
        node: &Arc<str>,
        action: Action,
        attempt: u32,
        policy: &StepPolicy,
    ) -> StepCall {
        StepCall {
            workflow: self.workflow_name.clone(),
            run_id: self.run_id.clone(),
            transaction_id: self.transaction_id.clone(),
            step: self.saga.workflow.steps[step].name.as_str().into(),
            node: node.clone(),
            action,
            attempt,
            metadata: self.metadata.clone(),
            config: policy.config.clone(),
            deadline: policy.timeout.map(|t| Instant::now() + t),
            events: self.events.clone(),
        }
    }

    /// Emits an event of the run (recorded, and delivered to subscribers later).
    fn emit(&self, event: Event) {
        if let Err(e) = self.recorder.event(&event) {
            tracing::error!("{e}");
        }
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

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        step: usize,
        node: &Arc<str>,
        action: Action,
        attempt: u32,
        outcome: Outcome,
        input: Option<Json>,
        error: Option<StepFailure>,
        started: Instant,
    ) {
        let name = &self.saga.workflow.steps[step].name;
        let entry = TraceEntry {
            step: name.clone(),
            node: (**node != **name).then(|| node.to_string()),
            action,
            attempt,
            outcome,
            input,
            error,
            started_ms: ms(started.duration_since(self.started)),
            duration_ms: ms(started.elapsed()),
        };
        tracing::info!(step = %node, action = action.as_str(), attempt, outcome = ?entry.outcome, ms = entry.duration_ms, "call");
        self.trace.lock().expect("trace lock").push(entry);
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

/// Bounds a call by the policy's timeout. The WASM layer interrupts a guest at
/// the same deadline; this also covers steps that are not WASM.
async fn with_timeout<T>(
    policy: &StepPolicy,
    call: impl std::future::Future<Output = Result<T, StepFailure>>,
) -> Result<T, StepFailure> {
    match policy.timeout {
        None => call.await,
        Some(timeout) => match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StepFailure::new(
                FailureKind::Timeout,
                format!(
                    "the call did not finish within its timeout of {}",
                    humantime::format_duration(timeout)
                ),
            )),
        },
    }
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}
