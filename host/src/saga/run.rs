//! Executes one run of a workflow: forward through the flow, then, on failure,
//! backward through the compensation stack.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;

use super::plan::{Call, Entry, StepPolicy, Workflow};
use super::report::{CompensationFailure, Outcome, RunError, RunReport, RunStatus, TraceEntry};
use super::step::{Action, FailureKind, Invoked, RunEvents, Step, StepCall, StepFailure};
use crate::expr::{EvalError, Scope};
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
            metadata: Json::from_value(serde_json::json!({})),
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

    /// Runs the workflow to its end: `done`, or compensated (`reverted` or `failed`).
    pub async fn run(&self, request: RunRequest) -> RunReport {
        let run = Arc::new(Run {
            saga: self.clone(),
            workflow_name: self.workflow.name.as_str().into(),
            run_id: request.run_id.as_str().into(),
            transaction_id: request.transaction_id.as_str().into(),
            metadata: request.metadata,
            started: Instant::now(),
            trace: Mutex::default(),
            completed: Mutex::default(),
            events: Arc::default(),
        });
        let mut scope = Scope::with_input(request.input);
        let forward = match run
            .clone()
            .exec(self.workflow.flow.clone(), &mut scope)
            .await
        {
            Ok(()) => run.output(&scope),
            Err(failure) => Err(failure),
        };
        let (status, output, error) = match forward {
            Ok(output) => (RunStatus::Done, Some(output), None),
            Err(failure) => {
                let compensation_failures = run.compensate_all().await;
                let status = if compensation_failures.is_empty() {
                    RunStatus::Reverted
                } else {
                    RunStatus::Failed
                };
                let error = RunError {
                    step: failure.step,
                    kind: failure.error.kind,
                    message: failure.error.message,
                    permanent: failure.error.permanent,
                    compensation_failures,
                };
                (status, None, Some(error))
            }
        };
        RunReport {
            run: request.run_id,
            workflow: self.workflow.name.clone(),
            transaction_id: request.transaction_id,
            status,
            output,
            error,
            trace: std::mem::take(&mut *run.trace.lock().expect("trace lock")),
            events: run.events.snapshot(),
            duration_ms: ms(run.started.elapsed()),
        }
    }
}

/// Why the forward pass stopped.
struct Failure {
    step: Option<String>,
    error: StepFailure,
}

impl From<EvalError> for Failure {
    fn from(err: EvalError) -> Failure {
        Failure {
            step: None,
            error: StepFailure::new(FailureKind::Expression, err.to_string()).permanent(),
        }
    }
}

/// A call that may need compensating: pushed when it completes (or fails).
struct Completed {
    step: usize,
    node: Arc<str>,
    policy: StepPolicy,
    data: Option<Json>,
}

/// The state of one run.
struct Run {
    saga: Saga,
    workflow_name: Arc<str>,
    run_id: Arc<str>,
    transaction_id: Arc<str>,
    metadata: Json,
    started: Instant,
    trace: Mutex<Vec<TraceEntry>>,
    /// The compensation stack, in completion order.
    completed: Mutex<Vec<Completed>>,
    events: Arc<RunEvents>,
}

impl Run {
    /// Runs `entries` in order, binding names into `scope`.
    fn exec(
        self: Arc<Self>,
        entries: Arc<[Entry]>,
        scope: &mut Scope,
    ) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move {
            for index in 0..entries.len() {
                self.clone()
                    .exec_entry(entries.clone(), index, scope)
                    .await?;
            }
            Ok(())
        })
    }

    fn exec_entry(
        self: Arc<Self>,
        entries: Arc<[Entry]>,
        index: usize,
        scope: &mut Scope,
    ) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move { self.exec_entry_inner(&entries[index], scope).await })
    }

    async fn exec_entry_inner(
        self: &Arc<Self>,
        entry: &Entry,
        scope: &mut Scope,
    ) -> Result<(), Failure> {
        match entry {
            Entry::Run(call) => {
                let input = match &call.input {
                    Some(expr) => expr.eval(scope).map_err(|e| Failure {
                        step: Some(call.node.clone()),
                        ..Failure::from(e)
                    })?,
                    None => scope.get("input").cloned().unwrap_or_else(Json::null),
                };
                let output = match self.invoke(call, input).await? {
                    Invoked::Done { output, .. } => output,
                    Invoked::Skip => Json::null(),
                };
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
                let input = match input {
                    Some(expr) => expr.eval(scope)?,
                    None => scope.get("input").cloned().unwrap_or_else(Json::null),
                };
                let mut inner = Scope::with_input(input);
                self.clone().exec(flow.clone(), &mut inner).await?;
                let value = output_of(output.as_ref(), &inner)?;
                if let Some(name) = bind {
                    scope.bind(name.clone(), value);
                }
            }
            Entry::Transform { expr, bind } => {
                let value = expr.eval(scope)?;
                scope.bind(bind.clone(), value);
            }
        }
        Ok(())
    }

    /// Starts every branch at once on the runtime, waits for all of them
    /// (running siblings finish even when one fails), then merges their names.
    async fn exec_parallel(
        self: Arc<Self>,
        branches: Arc<[Entry]>,
        scope: &mut Scope,
    ) -> Result<(), Failure> {
        let handles: Vec<_> = (0..branches.len())
            .map(|index| {
                let run = self.clone();
                let branches = branches.clone();
                let mut branch_scope = scope.clone();
                tokio::spawn(async move {
                    run.exec_entry(branches, index, &mut branch_scope).await?;
                    Ok::<Scope, Failure>(branch_scope)
                })
            })
            .collect();
        let mut first_failure = None;
        let mut results = Vec::with_capacity(handles.len());
        for handle in handles {
            match handle.await {
                Ok(Ok(branch_scope)) => results.push(branch_scope),
                Ok(Err(failure)) => {
                    first_failure.get_or_insert(failure);
                }
                Err(join_error) => {
                    first_failure.get_or_insert(Failure {
                        step: None,
                        error: StepFailure::new(
                            FailureKind::Host,
                            format!("a parallel branch crashed: {join_error}"),
                        )
                        .permanent(),
                    });
                }
            }
        }
        if let Some(failure) = first_failure {
            return Err(failure);
        }
        for branch_scope in results {
            let changed: Vec<(String, Json)> = branch_scope
                .iter()
                .filter(|(name, value)| !scope.get(name).is_some_and(|old| old.same(value)))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            for (name, value) in changed {
                scope.bind(name, value);
            }
        }
        Ok(())
    }

    /// Invokes a step with its retry policy; pushes it on the compensation
    /// stack when it completes or finally fails.
    async fn invoke(&self, call: &Call, input: Json) -> Result<Invoked, Failure> {
        let step = &self.saga.steps[call.step];
        let policy = &call.policy;
        let node: Arc<str> = call.node.as_str().into();
        let mut attempt = 1;
        loop {
            let context = self.call_context(call.step, &node, Action::Invoke, attempt, policy);
            let started = Instant::now();
            let result = with_timeout(policy, step.invoke(&input, &context)).await;
            let (outcome, error) = match &result {
                Ok(Invoked::Done { .. }) => (Outcome::Ok, None),
                Ok(Invoked::Skip) => (Outcome::Skipped, None),
                Err(e) => (Outcome::Error, Some(e.clone())),
            };
            self.record(
                call.step,
                &node,
                Action::Invoke,
                attempt,
                outcome,
                Some(input.clone()),
                error,
                started,
            );
            match result {
                Ok(Invoked::Done {
                    output,
                    compensation,
                }) => {
                    let data = compensation.unwrap_or_else(|| output.clone());
                    self.push_completed(call.step, &node, policy, Some(data));
                    return Ok(Invoked::Done {
                        output,
                        compensation: None,
                    });
                }
                Ok(Invoked::Skip) => return Ok(Invoked::Skip),
                Err(error) if error.permanent || attempt > policy.retries.max => {
                    self.push_completed(call.step, &node, policy, error.compensation_data.clone());
                    return Err(Failure {
                        step: Some(node.to_string()),
                        error,
                    });
                }
                Err(_) => {
                    tokio::time::sleep(policy.retries.delay_after(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    fn push_completed(
        &self,
        step: usize,
        node: &Arc<str>,
        policy: &StepPolicy,
        data: Option<Json>,
    ) {
        if policy.compensate {
            self.completed.lock().expect("stack lock").push(Completed {
                step,
                node: node.clone(),
                policy: policy.clone(),
                data,
            });
        }
    }

    /// Compensates the stack in reverse completion order. A compensation that
    /// still fails after its retries is reported; the others still run.
    async fn compensate_all(&self) -> Vec<CompensationFailure> {
        let stack = std::mem::take(&mut *self.completed.lock().expect("stack lock"));
        let mut failures = Vec::new();
        for entry in stack.into_iter().rev() {
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
        let step = &self.saga.steps[entry.step];
        let mut attempt = 1;
        loop {
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
            let (outcome, error) = match &result {
                Ok(()) => (Outcome::Ok, None),
                Err(e) => (Outcome::Error, Some(e.clone())),
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
            match result {
                Ok(()) => return Ok(()),
                Err(error) if error.permanent || attempt > entry.policy.retries.max => {
                    return Err(error);
                }
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
        self.trace.lock().expect("trace lock").push(entry);
    }

    fn output(&self, scope: &Scope) -> Result<Json, Failure> {
        output_of(self.saga.workflow.output.as_ref(), scope)
    }
}

/// A workflow's output: its `[output]` expression, or every bound name.
fn output_of(expr: Option<&crate::expr::Expr>, scope: &Scope) -> Result<Json, Failure> {
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

fn ms(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}
