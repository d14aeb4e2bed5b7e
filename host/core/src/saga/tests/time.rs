//! Time in a run, with a hand-moved clock: sleeps and async answer deadlines.

use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const START: i64 = 1_800_000_000_000;

fn at(recorder: &Arc<MemoryRecorder>, clock: &Clock, cancel: bool) -> Durability {
    Durability {
        clock: clock.clone(),
        ..resume(recorder, cancel)
    }
}

fn sleep_for(duration: Duration, bind: Option<&str>) -> Entry {
    Entry::Sleep(Sleep {
        node: bind.unwrap_or("sleep").to_string(),
        duration: Some(duration),
        until: None,
        bind: bind.map(str::to_string),
    })
}

#[tokio::test]
async fn a_sleep_pauses_the_run_until_its_time_and_a_resume_after_it_goes_on() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, None),
        sleep_for(2 * HOUR, Some("nap")),
        f.run_entry(b, Some("nap"), Some("rb")),
    ];
    let saga = f.saga(flow, Some("rb.input"));
    let recorder = Arc::new(MemoryRecorder::default());
    let clock = Clock::manual(START);
    let request = RunRequest::new(Json::null());
    let first = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(first.status, RunStatus::Waiting);
    assert_eq!(first.wake_at, Some(START + 2 * 3_600_000));
    assert_eq!(f.log.lines(), ["invoke a #1", "end a"]);
    // An hour in, it still sleeps (and `a` is not called again).
    clock.advance(HOUR);
    let early = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(early.status, RunStatus::Waiting);
    assert_eq!(early.wake_at, Some(START + 2 * 3_600_000));
    clock.advance(HOUR);
    let done = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(done.status, RunStatus::Done, "{:?}", done.error);
    assert_eq!(done.wake_at, None);
    // The sleep's output is its wake-up time.
    assert_eq!(
        done.output.unwrap().value(),
        &json!({"until": "2027-01-15T10:00:00.000Z"})
    );
    assert_eq!(
        f.log.lines(),
        ["invoke a #1", "end a", "invoke b #1", "end b"]
    );
    // Replayed once more, the sleep is settled: no new wait.
    let replayed = saga
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(replayed.status, RunStatus::Done);
}

#[tokio::test]
async fn a_cancel_during_a_sleep_compensates_what_ran_before_it() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, None),
        sleep_for(HOUR, None),
        f.run_entry(b, None, None),
    ];
    let saga = f.saga(flow, None);
    let recorder = Arc::new(MemoryRecorder::default());
    let clock = Clock::manual(START);
    let request = RunRequest::new(Json::from_value(json!("x")));
    let first = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(first.status, RunStatus::Waiting);
    let cancelled = saga.run_durably(request, at(&recorder, &clock, true)).await;
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(
        f.log.lines(),
        [
            "invoke a #1",
            "end a",
            "compensate a {\"input\":\"x\",\"step\":\"a\"} #1"
        ]
    );
}

#[tokio::test]
async fn a_sleep_until_a_past_time_does_not_wait_and_a_bad_time_fails_the_run() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let sleep_until = |expr: &str| {
        Entry::Sleep(Sleep {
            node: "sleep".into(),
            duration: None,
            until: Some(Expr::compile(expr).unwrap()),
            bind: None,
        })
    };
    let clock = Clock::manual(START);
    let past = f.saga(
        vec![sleep_until("input.at"), f.run_entry(a, None, None)],
        None,
    );
    let recorder = Arc::new(MemoryRecorder::default());
    let request = RunRequest::new(Json::from_value(json!({"at": "2020-01-01T00:00:00Z"})));
    let report = past
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(report.status, RunStatus::Done, "{:?}", report.error);
    let future = f.saga(vec![sleep_until("input.at")], None);
    let recorder = Arc::new(MemoryRecorder::default());
    let request = RunRequest::new(Json::from_value(json!({"at": "2030-01-01T00:00:00Z"})));
    let report = future
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(report.status, RunStatus::Waiting);
    assert_eq!(report.wake_at, Some(1_893_456_000_000));
    let recorder = Arc::new(MemoryRecorder::default());
    let request = RunRequest::new(Json::from_value(json!({"at": "tomorrow"})));
    let report = future
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(report.status, RunStatus::Reverted);
    let error = report.error.unwrap();
    assert_eq!(error.kind, FailureKind::Expression);
    assert!(
        error.message.contains("not an RFC 3339 time"),
        "{}",
        error.message
    );
}

fn answered_within(timeout: Duration, retries: u32) -> StepPolicy {
    StepPolicy {
        asynchronous: true,
        timeout: Some(timeout),
        retries: RetryPolicy {
            max: retries,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn an_async_step_not_answered_in_time_fails_as_timeout_and_the_run_compensates() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let pay = f.step("pay", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, None),
        f.run_with(pay, None, None, answered_within(HOUR, 0)),
    ];
    let saga = f.saga(flow, None);
    let recorder = Arc::new(MemoryRecorder::default());
    let clock = Clock::manual(START);
    let request = RunRequest::new(Json::from_value(json!(7)));
    let first = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(first.status, RunStatus::Waiting);
    assert_eq!(first.wake_at, Some(START + 3_600_000));
    clock.advance(HOUR);
    let timed_out = saga
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(timed_out.status, RunStatus::Reverted);
    let error = timed_out.error.unwrap();
    assert_eq!(error.kind, FailureKind::Timeout);
    assert_eq!(error.step.as_deref(), Some("pay"));
    assert!(
        error.message.contains("no answer came within"),
        "{}",
        error.message
    );
    // The async step is compensated with what its invoke returned (the work
    // it started may still be going), then the steps before it.
    assert_eq!(
        f.log.lines(),
        [
            "invoke a #1",
            "end a",
            "invoke pay #1",
            "end pay",
            "compensate pay {\"input\":7,\"step\":\"pay\"} #1",
            "compensate a {\"input\":7,\"step\":\"a\"} #1"
        ]
    );
}

#[tokio::test]
async fn an_async_step_that_timed_out_is_invoked_again_under_its_retries_and_an_answer_in_time_wins()
 {
    let mut f = Flow::new();
    let pay = f.step("pay", Behaviour::default());
    let flow = vec![f.run_with(pay, None, Some("paid"), answered_within(HOUR, 1))];
    let saga = f.saga(flow, Some("paid"));
    let recorder = Arc::new(MemoryRecorder::default());
    let clock = Clock::manual(START);
    let request = RunRequest::new(Json::null());
    let first = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(first.status, RunStatus::Waiting);
    clock.advance(HOUR);
    // The first attempt times out; the retry invokes it again and waits
    // anew, with a deadline from its own start.
    let retried = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(retried.status, RunStatus::Waiting);
    assert_eq!(retried.wake_at, Some(START + 2 * 3_600_000));
    assert_eq!(
        f.log.lines(),
        ["invoke pay #1", "end pay", "invoke pay #2", "end pay"]
    );
    // The answer comes before the second deadline.
    let answer = CallRecord::Done {
        output: Json::from_value(json!({"paid": true})),
        compensation: None,
    };
    recorder
        .call_finished("pay", Action::Invoke, 2, &answer)
        .unwrap();
    clock.advance(3 * HOUR);
    let done = saga
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(done.status, RunStatus::Done, "{:?}", done.error);
    assert_eq!(done.output.unwrap().value(), &json!({"paid": true}));
}

#[tokio::test]
async fn a_run_waiting_on_a_sleep_and_an_async_step_wakes_at_the_earlier_time() {
    let mut f = Flow::new();
    let pay = f.step("pay", Behaviour::default());
    let flow = vec![Entry::Parallel(
        vec![
            f.run_with(pay, None, None, answered_within(3 * HOUR, 0)),
            sleep_for(HOUR, None),
        ]
        .into(),
    )];
    let saga = f.saga(flow, None);
    let recorder = Arc::new(MemoryRecorder::default());
    let clock = Clock::manual(START);
    let request = RunRequest::new(Json::null());
    let first = saga
        .run_durably(request.clone(), at(&recorder, &clock, false))
        .await;
    assert_eq!(first.status, RunStatus::Waiting);
    assert_eq!(first.wake_at, Some(START + 3_600_000));
    clock.advance(HOUR);
    // The sleep is over; the step still waits, until its own deadline.
    let second = saga
        .run_durably(request, at(&recorder, &clock, false))
        .await;
    assert_eq!(second.status, RunStatus::Waiting);
    assert_eq!(second.wake_at, Some(START + 3 * 3_600_000));
}

#[tokio::test]
async fn a_retry_after_a_timeout_that_died_in_flight_is_invoked_again_not_timed_out_again() {
    let mut f = Flow::new();
    let pay = f.step("pay", Behaviour::default());
    let flow = vec![f.run_with(pay, None, None, answered_within(HOUR, 2))];
    let saga = f.saga(flow, None);
    let recorder = Arc::new(MemoryRecorder::default());
    let clock = Clock::manual(START);
    // Attempt 1 waited and timed out; attempt 2 started, then its host died.
    let waiting = CallRecord::Waiting {
        output: Json::null(),
        until: Some(START),
    };
    let timed_out = CallRecord::Failed {
        error: StepFailure::new(FailureKind::Timeout, "no answer"),
        last: false,
    };
    recorder
        .history
        .lock()
        .unwrap()
        .started("pay", Action::Invoke, 1);
    recorder
        .call_finished("pay", Action::Invoke, 1, &waiting)
        .unwrap();
    recorder
        .call_finished("pay", Action::Invoke, 1, &timed_out)
        .unwrap();
    recorder
        .history
        .lock()
        .unwrap()
        .started("pay", Action::Invoke, 2);
    clock.advance(HOUR);
    let resumed = saga
        .run_durably(RunRequest::new(Json::null()), at(&recorder, &clock, false))
        .await;
    assert_eq!(resumed.status, RunStatus::Waiting);
    assert_eq!(f.log.lines(), ["invoke pay #3", "end pay"]);
    assert_eq!(resumed.wake_at, Some(START + 2 * 3_600_000));
}
