//! Durability through the recorder: resumed runs and compensations, async and
//! background steps, cancelling a finished run, and a lease lost mid-run.

use super::*;

#[tokio::test]
async fn a_resumed_run_does_not_call_settled_steps_again() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, Some("ra")),
        f.run_entry(b, Some("ra.step"), Some("rb")),
    ];
    let saga = f.saga(flow, Some("rb.input"));
    // The first life: `a` finished, `b` started (attempt 1) and the host died.
    let recorder = Arc::new(MemoryRecorder::default());
    recorder
        .call_started(&CallStart {
            node: "a",
            step: "a",
            action: Action::Invoke,
            attempt: 1,
            input: None,
        })
        .unwrap();
    let done = CallRecord::Done {
        output: Json::from_value(json!({"step": "a", "input": 1})),
        compensation: None,
    };
    recorder
        .call_finished("a", Action::Invoke, 1, &done)
        .unwrap();
    recorder
        .call_started(&CallStart {
            node: "b",
            step: "b",
            action: Action::Invoke,
            attempt: 1,
            input: None,
        })
        .unwrap();
    let history = recorder.history.lock().unwrap().clone();
    let request = RunRequest::new(Json::from_value(json!(1)));
    let report = saga
        .run_durably(
            request,
            Durability {
                recorder: recorder.clone(),
                history,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(report.output.unwrap().value(), &json!("a"));
    // Only `b` ran, as its second attempt.
    assert_eq!(f.log.lines(), ["invoke b #2", "end b"]);
}

#[tokio::test]
async fn a_resumed_compensation_skips_what_was_compensated_and_keeps_the_order() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let c = f.step(
        "c",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let flow = vec![
        f.run_entry(a, None, None),
        f.run_entry(b, None, None),
        f.run_entry(c, None, None),
    ];
    let saga = f.saga(flow, None);
    let recorder = Arc::new(MemoryRecorder::default());
    let out = |s: &str| CallRecord::Done {
        output: Json::from_value(json!(s)),
        compensation: None,
    };
    recorder
        .call_finished("a", Action::Invoke, 1, &out("a"))
        .unwrap();
    recorder
        .call_finished("b", Action::Invoke, 1, &out("b"))
        .unwrap();
    let failed = CallRecord::Failed {
        error: StepFailure::new(FailureKind::Unknown, "boom").permanent(),
        last: true,
    };
    recorder
        .call_finished("c", Action::Invoke, 1, &failed)
        .unwrap();
    recorder
        .call_finished("c", Action::Compensate, 1, &CallRecord::Compensated)
        .unwrap();
    // The host died while compensating `b`.
    recorder
        .call_started(&CallStart {
            node: "b",
            step: "b",
            action: Action::Compensate,
            attempt: 1,
            input: None,
        })
        .unwrap();
    let history = recorder.history.lock().unwrap().clone();
    let report = saga
        .run_durably(
            RunRequest::new(Json::null()),
            Durability {
                recorder: recorder.clone(),
                history,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(
        f.log.lines(),
        ["compensate b \"b\" #2", "compensate a \"a\" #1"]
    );
}

#[tokio::test]
async fn an_async_step_waits_for_an_outside_answer_and_the_run_goes_on_with_it() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let waits = StepPolicy {
        asynchronous: true,
        ..Default::default()
    };
    let flow = vec![
        f.run_with(a, None, Some("ra"), waits),
        f.run_entry(b, Some("ra"), Some("rb")),
    ];
    let saga = f.saga(flow, Some("rb.input"));
    let recorder = Arc::new(MemoryRecorder::default());
    let request = RunRequest::new(Json::from_value(json!(1)));
    let first = saga
        .run_durably(request.clone(), resume(&recorder, false))
        .await;
    assert_eq!(first.status, RunStatus::Waiting);
    assert_eq!(f.log.lines(), ["invoke a #1", "end a"]);
    // Resuming before the answer keeps waiting, without calling `a` again.
    let again = saga
        .run_durably(request.clone(), resume(&recorder, false))
        .await;
    assert_eq!(again.status, RunStatus::Waiting);
    // The answer arrives (`host step succeed`).
    let answer = CallRecord::Done {
        output: Json::from_value(json!({"approved": true})),
        compensation: None,
    };
    recorder
        .call_finished("a", Action::Invoke, 1, &answer)
        .unwrap();
    let done = saga.run_durably(request, resume(&recorder, false)).await;
    assert_eq!(done.status, RunStatus::Done);
    assert_eq!(done.output.unwrap().value(), &json!({"approved": true}));
    assert_eq!(
        f.log.lines(),
        ["invoke a #1", "end a", "invoke b #1", "end b"]
    );
}

#[tokio::test]
async fn a_background_step_is_left_for_a_later_resume() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let later = f.step("later", Behaviour::default());
    let background = StepPolicy {
        background: true,
        ..Default::default()
    };
    let flow = vec![
        f.run_entry(a, None, None),
        f.run_with(later, None, None, background),
    ];
    let saga = f.saga(flow, None);
    let recorder = Arc::new(MemoryRecorder::default());
    let request = RunRequest::new(Json::null());
    let detached = Durability {
        detach_background: true,
        ..resume(&recorder, false)
    };
    let first = saga.run_durably(request.clone(), detached).await;
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(f.log.lines(), ["invoke a #1", "end a"]);
    let done = saga.run_durably(request, resume(&recorder, false)).await;
    assert_eq!(done.status, RunStatus::Done);
    assert_eq!(
        f.log.lines(),
        ["invoke a #1", "end a", "invoke later #1", "end later"]
    );
}

#[tokio::test]
async fn cancelling_a_finished_run_compensates_everything_it_did() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let saga = f.saga(
        vec![f.run_entry(a, None, None), f.run_entry(b, None, None)],
        None,
    );
    let recorder = Arc::new(MemoryRecorder::default());
    let request = RunRequest::new(Json::null());
    assert_eq!(
        saga.run_durably(request.clone(), resume(&recorder, false))
            .await
            .status,
        RunStatus::Done
    );
    let cancelled = saga.run_durably(request, resume(&recorder, true)).await;
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.error.unwrap().kind, FailureKind::Cancelled);
    let lines = f.log.lines();
    assert_eq!(
        &lines[4..],
        [
            "compensate b {\"input\":null,\"step\":\"b\"} #1",
            "compensate a {\"input\":null,\"step\":\"a\"} #1"
        ]
    );
}

/// A recorder whose lease is taken over at its `after`-th call start: that
/// start and everything after it fail with `LeaseLost`, as the journal's
/// fenced writes do.
struct LosingRecorder {
    starts: std::sync::atomic::AtomicU32,
    after: u32,
    lost: std::sync::atomic::AtomicBool,
}

impl LosingRecorder {
    fn check(&self) -> Result<(), RecordError> {
        if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RecordError::LeaseLost("lease lost".into()));
        }
        Ok(())
    }
}

impl Recorder for LosingRecorder {
    fn call_started(&self, _: &CallStart<'_>) -> Result<(), RecordError> {
        let n = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if n >= self.after {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.check()
    }
    fn call_finished(
        &self,
        _: &str,
        _: Action,
        _: u32,
        _: &CallRecord,
    ) -> Result<u64, RecordError> {
        self.check().map(|()| 1)
    }
    fn event(&self, _: &Event) -> Result<(), RecordError> {
        Ok(())
    }
    fn compensating(&self, _: &RunError) -> Result<(), RecordError> {
        self.check()
    }
    fn flush(&self) -> Result<(), RecordError> {
        self.check()
    }
    fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs `steps` in sequence under a [`LosingRecorder`] that loses the run
/// at its `after`-th call start.
async fn run_losing(f: &Flow, steps: [usize; 3], after: u32) -> RunReport {
    let saga = f.saga(
        steps.iter().map(|&s| f.run_entry(s, None, None)).collect(),
        None,
    );
    let recorder = Arc::new(LosingRecorder {
        starts: Default::default(),
        after,
        lost: Default::default(),
    });
    saga.run_durably(
        RunRequest::new(Json::from_value(json!(1))),
        Durability {
            recorder,
            ..Default::default()
        },
    )
    .await
}

/// A host that lost its lease stops where it is: no further step is
/// called, nothing it did is compensated (the host that took the run over
/// continues it from the journal), and the run is left `running`.
#[tokio::test]
async fn a_run_whose_lease_was_taken_over_stops_without_compensating() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let c = f.step("c", Behaviour::default());
    let report = run_losing(&f, [a, b, c], 2).await;
    assert_eq!(report.status, RunStatus::Running);
    assert!(
        report.error.unwrap().message.contains("lease lost"),
        "the reason is kept"
    );
    // `a` ran; `b`'s start was refused, so neither `b` nor `c` ran, and
    // `a` was not compensated.
    assert_eq!(f.log.lines(), ["invoke a #1", "end a"]);
}

/// Losing the run while compensating (a compensation's start could not be
/// recorded) stops the compensation where it is: the run is not claimed
/// `failed` (its compensations did not fail), it is left for whoever
/// resumes it, and no compensation runs unrecorded.
#[tokio::test]
async fn a_run_lost_while_compensating_is_left_unfinished_not_failed() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let c = f.step(
        "c",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    // Starts 1-3 are the invokes; the 4th, b's compensation, is refused.
    let report = run_losing(&f, [a, b, c], 4).await;
    assert_eq!(report.status, RunStatus::Running);
    assert!(
        f.log
            .lines()
            .iter()
            .all(|line| !line.starts_with("compensate")),
        "{:?}",
        f.log.lines()
    );
}
