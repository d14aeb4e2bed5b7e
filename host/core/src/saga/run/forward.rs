//! The forward pass: the flow's entries in order (sequence, parallel,
//! `when`, `for-each`, nested and hooks), each call's failure policy, and
//! replaying what the history already settled.

use super::*;

impl Run {
    /// Runs `entries` in order, binding names into `scope`. A skip binds the
    /// names of the entries it passes over to null.
    pub(super) fn exec(
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

    pub(super) fn exec_entry(
        self: Arc<Self>,
        entries: Arc<[Entry]>,
        index: usize,
        scope: &mut Scope,
    ) -> BoxFuture<'_, Result<(), Stop>> {
        Box::pin(async move { self.exec_entry_inner(&entries[index], scope).await })
    }

    pub(super) async fn exec_entry_inner(
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
            Entry::Sleep(sleep) => {
                let output = self.sleep(sleep, scope)?;
                if let Some(name) = &sleep.bind {
                    scope.bind(name.clone(), output);
                }
            }
        }
        Ok(())
    }

    /// The input of a call (see [`eval_input`]); a failure names the call.
    pub(super) fn input_of(
        &self,
        call: &Call,
        expr: Option<&Expr>,
        scope: &Scope,
    ) -> Result<Json, Stop> {
        eval_input(expr, scope).map_err(|e| {
            Stop::Fail(Failure {
                step: Some(call.node.clone()),
                ..Failure::from(e)
            })
        })
    }

    /// Invokes a call and applies its `on-permanent-failure` policy: the
    /// output, or null when the failure does not stop the flow.
    pub(super) async fn call_with_policy(
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
    pub(super) async fn exec_parallel(
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
    pub(super) async fn exec_for_each(
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
    pub(super) async fn invoke(
        &self,
        call: &Call,
        node: &Arc<str>,
        input: Json,
    ) -> Result<Invoked, Stop> {
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
        if let (Some(recorded), Some((_, invoked))) = (recorded, waiting) {
            // Past its deadline the waiting attempt fails as `timeout`, and
            // the step settles (or is retried) as after any failed attempt.
            match recorded.until {
                Some(until) if self.clock.now_ms() >= until => {
                    let (seq, record) =
                        self.answer_timed_out(call, node, recorded.attempts, invoked)?;
                    if let CallRecord::Failed { last: true, .. } = record {
                        return self
                            .settle(call, node, seq, record, true)
                            .map_err(Stop::Fail);
                    }
                }
                until => return Err(self.pause_until(until)),
            }
        }
        match recorded {
            Some(recorded) => attempt = recorded.attempts + 1,
            None if policy.background && self.detach_background => {
                return Err(Stop::Pause(Pause::Detached));
            }
            None => {}
        }
        let target = CallTarget {
            step: call.step,
            node,
            action: Action::Invoke,
            policy,
            input: Some(&input),
        };
        let (seq, record) = self.attempts(&target, attempt).await?;
        if let CallRecord::Waiting { until, .. } = record {
            return Err(self.pause_until(until));
        }
        self.settle(call, node, seq, record, true)
            .map_err(Stop::Fail)
    }

    /// A call's settled outcome, live or replayed from the history: pushes
    /// the compensation stack, and emits the step's lifecycle event when live.
    pub(super) fn settle(
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

    pub(super) fn check_deadline(&self, node: &str) -> Result<(), Failure> {
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

    pub(super) fn push_completed(
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
}
