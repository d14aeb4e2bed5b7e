//! Time in a run: `sleep` entries and the deadline of an async step's answer.
//! Both are journaled as a waiting call with its time (`until`), so the run
//! pauses holding nothing and whoever resumes it after that time goes on;
//! the earliest time a paused run waits for becomes its wake-up time. It may
//! not call steps or wait in-process.

use super::*;

impl Run {
    /// Runs a `sleep` entry: the first time, records it as a waiting call
    /// with its wake-up time and pauses the run; resumed at or after that
    /// time, records it done and goes on. Its output is `{"until": "<RFC 3339>"}`.
    pub(super) fn sleep(&self, sleep: &Sleep, scope: &Scope) -> Result<Json, Stop> {
        let node: Arc<str> = sleep.node.as_str().into();
        let recorded = self.history.call(&node, Action::Invoke);
        if let Some((seq, record)) = recorded.and_then(|r| r.settled.as_ref()) {
            self.seq.fetch_max(*seq, Ordering::SeqCst);
            return match record {
                CallRecord::Done { output, .. } => Ok(output.clone()),
                // Answered as failed from outside (`host step fail`).
                CallRecord::Failed { error, .. } => Err(Stop::Fail(Failure {
                    step: Some(node.to_string()),
                    error: error.clone(),
                })),
                _ => Err(Stop::Fail(Failure {
                    step: Some(node.to_string()),
                    error: StepFailure::new(
                        FailureKind::Host,
                        "the journal holds an unexpected record for this sleep",
                    )
                    .permanent(),
                })),
            };
        }
        if self.cancel {
            // Nothing to undo: a sleep did nothing.
            return Err(Stop::Fail(Failure {
                step: Some(node.to_string()),
                error: StepFailure::new(FailureKind::Cancelled, "the run was cancelled")
                    .permanent(),
            }));
        }
        let waiting = recorded.and_then(|r| r.waiting.as_ref().map(|w| (w, r.until)));
        if let Some(((_, output), until)) = waiting {
            let until = until.unwrap_or(0);
            if self.clock.now_ms() < until {
                return Err(self.pause_until(Some(until)));
            }
            let done = CallRecord::Done {
                output: output.clone(),
                compensation: None,
            };
            let seq = self
                .recorder
                .call_finished(&node, Action::Invoke, 1, &done)?;
            self.seq.fetch_max(seq, Ordering::SeqCst);
            return Ok(output.clone());
        }
        let until = self.sleep_until(sleep, scope)?;
        let output = Json::from_value(json!({ "until": rfc3339(until) }));
        if until <= self.clock.now_ms() {
            // Already past (a `sleep-until` of an earlier time): nothing to
            // wait for, nothing to record.
            return Ok(output);
        }
        let started = Instant::now();
        self.recorder.call_started(&CallStart {
            node: &node,
            step: "sleep",
            action: Action::Invoke,
            attempt: 1,
            input: Some(&output),
        })?;
        // In the report of the process that pauses: the sleep's attempt,
        // which its wake-up ends (as an async step's answer does).
        self.trace.lock().expect("trace lock").push(TraceEntry {
            step: "sleep".into(),
            node: (*node != *"sleep").then(|| node.to_string()),
            action: Action::Invoke,
            attempt: 1,
            outcome: Outcome::Ok,
            input: Some(output.clone()),
            output: None,
            error: None,
            started_ms: ms(started.duration_since(self.started)),
            duration_ms: 0.0,
            requests: Vec::new(),
        });
        let waiting = CallRecord::Waiting {
            output,
            until: Some(until),
        };
        let seq = self
            .recorder
            .call_finished(&node, Action::Invoke, 1, &waiting)?;
        self.seq.fetch_max(seq, Ordering::SeqCst);
        Err(self.pause_until(Some(until)))
    }

    /// The unix ms a sleep waits for.
    fn sleep_until(&self, sleep: &Sleep, scope: &Scope) -> Result<i64, Stop> {
        if let Some(duration) = sleep.duration {
            return Ok(self
                .clock
                .now_ms()
                .saturating_add(duration.as_millis().min(i64::MAX as u128) as i64));
        }
        let fail = |message: String| {
            Stop::Fail(Failure {
                step: Some(sleep.node.clone()),
                error: StepFailure::new(FailureKind::Expression, message).permanent(),
            })
        };
        let expr = sleep
            .until
            .as_ref()
            .ok_or_else(|| fail("a sleep without a time".into()))?;
        let value = expr.eval(scope).map_err(|e| fail(e.to_string()))?;
        let text = value.value().as_str().map(str::to_string).ok_or_else(|| {
            fail(format!(
                "`sleep-until` gave {}, not a time: give an RFC 3339 time in UTC, a string like \"2026-12-24T18:00:00Z\"",
                value.text()
            ))
        })?;
        let time = humantime::parse_rfc3339_weak(&text).map_err(|e| {
            fail(format!(
                "`sleep-until` gave \"{text}\", which is not an RFC 3339 time in UTC ({e}): write it like \"2026-12-24T18:00:00Z\""
            ))
        })?;
        let ms = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(ms)
    }

    /// The run pauses as `waiting`; `until`, when given, may make its
    /// wake-up time earlier.
    pub(super) fn pause_until(&self, until: Option<i64>) -> Stop {
        if let Some(until) = until {
            self.wake_at.fetch_min(until, Ordering::SeqCst);
        }
        Stop::Pause(Pause::Waiting)
    }

    /// The earliest time the paused run waits for, if any.
    pub(super) fn wake_at(&self) -> Option<i64> {
        let at = self.wake_at.load(Ordering::SeqCst);
        (at != i64::MAX).then_some(at)
    }

    /// An async step's answer did not come before `until`: the waiting
    /// attempt fails as `timeout` (retried per the step's policy). Its
    /// compensation gets what the invoke returned (the work it started may
    /// still be going on: the compensation can stop it).
    pub(super) fn answer_timed_out(
        &self,
        call: &Call,
        node: &Arc<str>,
        attempt: u32,
        invoked: &Json,
    ) -> Result<(u64, CallRecord), Stop> {
        let timeout = call.policy.timeout.unwrap_or_default();
        let mut error = StepFailure::new(
            FailureKind::Timeout,
            format!(
                "no answer came within the step's timeout of {}",
                humantime::format_duration(timeout)
            ),
        );
        error.compensation_data = Some(invoked.clone());
        let last = attempt > call.policy.retries.max;
        let record = CallRecord::Failed { error, last };
        let seq = self
            .recorder
            .call_finished(node, Action::Invoke, attempt, &record)?;
        Ok((seq, record))
    }
}

/// Unix ms as an RFC 3339 time (UTC, ms precision).
pub fn rfc3339(ms: i64) -> String {
    // RFC 3339 ends at year 9999 (a `sleep = "20000y"` sleeps until then).
    const LAST: i64 = 253_402_300_799_999;
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}
