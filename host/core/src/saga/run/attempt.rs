//! One call attempt, in either direction: the attempt loop invoke and
//! compensate share (record the start, call with the step's timeout, trace,
//! record the end, back off and try again), so the two are symmetric by
//! construction.

use super::*;

/// What a call is, for the attempt loop: which step, under which name, in
/// which direction, with what input (for a compensation: its data).
pub(super) struct CallTarget<'a> {
    pub step: usize,
    pub node: &'a Arc<str>,
    pub action: Action,
    pub policy: &'a StepPolicy,
    pub input: Option<&'a Json>,
}

impl Run {
    /// Calls `target` from `attempt` on until it succeeds, fails permanently
    /// or runs out of retries; returns its last record and the record's
    /// sequence number. Every attempt's start and end are recorded.
    ///
    /// The directions differ only where the saga's rules say so: an invoke
    /// respects the workflow's deadline and stops on a journal failure (it
    /// must not run unrecorded), while a compensation always runs (logging a
    /// journal failure), since undoing must not be abandoned.
    pub(super) async fn attempts(
        &self,
        target: &CallTarget<'_>,
        mut attempt: u32,
    ) -> Result<(u64, CallRecord), Stop> {
        let step = &self.saga.steps[target.step];
        let invoke = target.action == Action::Invoke;
        let policy = target.policy;
        loop {
            // Another host took the run over: nothing more is called here,
            // not even a compensation (the new owner compensates).
            if self.recorder.lost() {
                return Err(self.lease_lost(target));
            }
            if invoke {
                self.check_deadline(target.node)?;
                if self.interrupt.is_cancelled() {
                    return Err(Stop::Fail(Failure {
                        step: Some(target.node.to_string()),
                        error: cancelled_error(),
                    }));
                }
            }
            let started_record = self
                .recorder
                .call_started_async(&CallStart {
                    node: target.node,
                    step: &self.saga.workflow.steps[target.step].name,
                    action: target.action,
                    attempt,
                    input: target.input,
                })
                .await;
            match started_record {
                Err(e) if invoke => return Err(e.into()),
                // The start of a compensation could not be recorded because
                // the run is no longer this host's: it is not called.
                Err(_) if self.recorder.lost() => return Err(self.lease_lost(target)),
                Err(e) => tracing::error!("{e}"),
                Ok(()) => {}
            }
            let started = Instant::now();
            let started_ms = self.clock.now_ms();
            let deadline = self.call_deadline(policy, invoke, started);
            let context = self.call_context(
                target.step,
                target.node,
                target.action,
                attempt,
                policy,
                deadline.at,
            );
            let result = if invoke {
                let input = target.input.expect("an invoke has an input");
                // A cancel interrupts the call (its sandbox is dropped, as at
                // a deadline); compensations are never interrupted.
                let call = with_deadline(&deadline, step.invoke(input, &context));
                let interrupted = async {
                    self.interrupt.cancelled().await;
                    Err(cancelled_error())
                };
                tokio::select! {
                    biased;
                    result = call => result,
                    result = interrupted => result,
                }
                .map(|invoked| match invoked {
                    // An async step's invoke starts the work; the answer comes later.
                    // Its `timeout` bounds the wait for the answer too,
                    // from the invoke's start.
                    Invoked::Done { output, .. } if policy.asynchronous => CallRecord::Waiting {
                        output,
                        until: policy.timeout.map(|timeout| {
                            started_ms
                                .saturating_add(timeout.as_millis().min(i64::MAX as u128) as i64)
                        }),
                    },
                    Invoked::Done {
                        output,
                        compensation,
                    } => CallRecord::Done {
                        output,
                        compensation,
                    },
                    Invoked::Skip => CallRecord::Skipped,
                })
            } else {
                with_deadline(&deadline, step.compensate(target.input, &context))
                    .await
                    .map(|()| CallRecord::Compensated)
            };
            let requests = context.outbound.take();
            if !requests.is_empty()
                && let Err(e) =
                    self.recorder
                        .call_requests(target.node, target.action, attempt, &requests)
            {
                tracing::error!("{e}");
            }
            let last = match &result {
                Ok(_) => true,
                Err(e) => e.permanent || attempt > policy.retries.max,
            };
            let (outcome, error) = match &result {
                Ok(CallRecord::Skipped) => (Outcome::Skipped, None),
                Ok(_) => (Outcome::Ok, None),
                Err(e) => (Outcome::Error, Some(e.clone())),
            };
            let record = result.unwrap_or_else(|error| CallRecord::Failed { error, last });
            let output = match &record {
                CallRecord::Done { output, .. } | CallRecord::Waiting { output, .. } => {
                    Some(output.clone())
                }
                _ => None,
            };
            self.record(
                target.step,
                target.node,
                target.action,
                attempt,
                (outcome, output),
                target.input.cloned(),
                error,
                started,
                requests,
            );
            let seq =
                match self
                    .recorder
                    .call_finished(target.node, target.action, attempt, &record)
                {
                    Ok(seq) => seq,
                    Err(e) if invoke => {
                        // The call may have done its work: compensate it with the rest.
                        if let Some(data) = record.compensation_data() {
                            let seq = self.next_seq();
                            self.push_completed(target.step, target.node, policy, Some(data), seq);
                        }
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        0
                    }
                };
            if last {
                return Ok((seq, record));
            }
            // A cancel during the back-off ends the wait (the next attempt
            // then stops before it starts).
            tokio::select! {
                _ = tokio::time::sleep(policy.retries.delay_after(attempt)) => {}
                _ = self.interrupt.cancelled(), if invoke => {}
            }
            attempt += 1;
        }
    }

    /// The failure of a call this host may no longer make.
    fn lease_lost(&self, target: &CallTarget<'_>) -> Stop {
        Stop::Fail(Failure {
            step: Some(target.node.to_string()),
            error: StepFailure::new(
                FailureKind::Host,
                "this host can no longer record the run (its lease was taken over, or the journal could not be written): the run stops here and is resumed from its journal",
            )
            .permanent(),
        })
    }

    pub(super) fn call_context(
        &self,
        step: usize,
        node: &Arc<str>,
        action: Action,
        attempt: u32,
        policy: &StepPolicy,
        deadline: Instant,
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
            trace_context: self.trace_context,
            config: policy.config.clone(),
            deadline: Some(deadline),
            events: self.events.clone(),
            outbound: Default::default(),
            fence: self.fence.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &self,
        step: usize,
        node: &Arc<str>,
        action: Action,
        attempt: u32,
        (outcome, output): (Outcome, Option<Json>),
        input: Option<Json>,
        error: Option<StepFailure>,
        started: Instant,
        requests: Vec<OutboundRequest>,
    ) {
        let name = &self.saga.workflow.steps[step].name;
        let entry = TraceEntry {
            step: name.clone(),
            node: (**node != **name).then(|| node.to_string()),
            action,
            attempt,
            outcome,
            input,
            output,
            error,
            started_ms: ms(started.duration_since(self.started)),
            duration_ms: ms(started.elapsed()),
            requests,
        };
        tracing::info!(step = %node, action = action.as_str(), attempt, outcome = ?entry.outcome, ms = entry.duration_ms, "call");
        self.trace.lock().expect("trace lock").push(entry);
    }
}

/// When a call attempt must end, and what to say if it does not.
pub(super) struct CallDeadline {
    /// The instant.
    pub at: Instant,
    /// The step's own `timeout` (or the default), or the workflow's.
    workflow: bool,
    timeout: Duration,
}

impl Run {
    /// An attempt ends at its step's `timeout` (by default
    /// [`DEFAULT_CALL_TIMEOUT`]: no call runs unbounded), and an invoke also
    /// at the workflow's deadline. A compensation ignores the workflow's
    /// deadline: what ran must still be undone.
    pub(super) fn call_deadline(
        &self,
        policy: &StepPolicy,
        invoke: bool,
        now: Instant,
    ) -> CallDeadline {
        let timeout = policy.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let own = CallDeadline {
            at: now + timeout,
            workflow: false,
            timeout,
        };
        match self.deadline {
            Some(workflow) if invoke && workflow < own.at => CallDeadline {
                at: workflow,
                workflow: true,
                timeout: self.saga.workflow.timeout.unwrap_or_default(),
            },
            _ => own,
        }
    }
}

/// How an invoke ends when its run is cancelled (permanent: the run is
/// being undone).
fn cancelled_error() -> StepFailure {
    StepFailure::new(
        FailureKind::Cancelled,
        "the run was cancelled while the call ran",
    )
    .permanent()
}

/// Runs `call` until `deadline`; past it, the call fails with `timeout`
/// (permanent when it was the workflow's: no retry can finish in time).
async fn with_deadline<T>(
    deadline: &CallDeadline,
    call: impl std::future::Future<Output = Result<T, StepFailure>>,
) -> Result<T, StepFailure> {
    match tokio::time::timeout_at(deadline.at.into(), call).await {
        Ok(result) => result,
        Err(_) if deadline.workflow => Err(StepFailure::new(
            FailureKind::Timeout,
            format!(
                "the workflow's timeout of {} passed while the call ran",
                humantime::format_duration(deadline.timeout)
            ),
        )
        .permanent()),
        Err(_) => Err(StepFailure::new(
            FailureKind::Timeout,
            format!(
                "the call did not finish within its timeout of {}",
                humantime::format_duration(deadline.timeout)
            ),
        )),
    }
}
