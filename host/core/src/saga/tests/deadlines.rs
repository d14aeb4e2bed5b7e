//! Deadlines and cancels: the workflow's timeout and a cancel interrupt a call
//! in progress; a call without a timeout gets the default deadline.

use super::*;

#[tokio::test]
async fn no_step_starts_after_the_workflow_timeout() {
    let mut f = Flow::new();
    let slow = f.step(
        "slow",
        Behaviour {
            sleep_ms: 60,
            ..Default::default()
        },
    );
    let next = f.step("next", Behaviour::default());
    let saga = f.saga_within(
        vec![f.run_entry(slow, None, None), f.run_entry(next, None, None)],
        None,
        Some(Duration::from_millis(30)),
    );
    let report = run(&saga, json!(0)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(report.error.as_ref().unwrap().kind, FailureKind::Timeout);
    assert_eq!(actions(&report), ["invoke slow", "compensate slow"]);
}

/// A cancel while a call runs interrupts it (a step stuck for 10 s ends at
/// once), starts nothing more, and compensates what ran, the interrupted
/// step included: the run ends `cancelled`.
#[tokio::test]
async fn a_cancel_interrupts_a_call_in_progress_and_compensates() {
    let (f, flow) = stuck_after_first(&["never"]);
    let saga = f.saga(flow, None);
    let interrupt = CancelSignal::default();
    let canceller = tokio::spawn({
        let interrupt = interrupt.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            interrupt.cancel();
        }
    });
    let started = std::time::Instant::now();
    let report = saga
        .run_durably(
            RunRequest::new(Json::from_value(json!(0))),
            Durability {
                interrupt,
                ..Durability::default()
            },
        )
        .await;
    canceller.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.status, RunStatus::Cancelled, "{report:?}");
    assert_eq!(actions(&report), INTERRUPTED);
}

/// `first`, then `stuck` (a call of 10 s), then steps named `then`.
fn stuck_after_first(then: &[&str]) -> (Flow, Vec<Entry>) {
    let mut f = Flow::new();
    let first = f.step("first", Behaviour::default());
    let stuck = f.step(
        "stuck",
        Behaviour {
            sleep_ms: 10_000,
            ..Default::default()
        },
    );
    let mut flow = vec![
        f.run_entry(first, None, None),
        f.run_entry(stuck, None, None),
    ];
    for name in then {
        let step = f.step(name, Behaviour::default());
        flow.push(f.run_entry(step, None, None));
    }
    (f, flow)
}

/// The calls of a run whose `stuck` step was interrupted.
const INTERRUPTED: [&str; 4] = [
    "invoke first",
    "invoke stuck",
    "compensate stuck",
    "compensate first",
];

#[tokio::test]
async fn the_workflow_timeout_interrupts_a_call_in_progress() {
    let (f, flow) = stuck_after_first(&[]);
    let saga = f.saga_within(flow, None, Some(Duration::from_millis(50)));
    let started = std::time::Instant::now();
    let report = run(&saga, json!(0)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.status, RunStatus::Reverted);
    let error = report.error.as_ref().unwrap();
    assert_eq!(error.kind, FailureKind::Timeout);
    assert!(
        error.message.contains("the workflow's timeout of 50ms"),
        "{}",
        error.message
    );
    assert!(error.permanent);
    assert_eq!(actions(&report), INTERRUPTED);
}

#[tokio::test]
async fn a_call_without_a_timeout_gets_the_default_deadline() {
    let mut f = Flow::new();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    f.steps.push(StepSpec {
        name: "k".into(),
        policy: StepPolicy::default(),
    });
    f.impls.push(Arc::new(FnStep::new(move |_, call: StepCall| {
        *seen2.lock().unwrap() = call.deadline;
        async { Ok(Invoked::done(Json::null())) }
    })));
    let saga = f.saga(vec![f.run_entry(0, None, None)], None);
    let before = std::time::Instant::now();
    saga.run(RunRequest::new(Json::null())).await;
    let deadline = seen.lock().unwrap().expect("every call has a deadline");
    let left = deadline - before;
    assert!(
        left >= DEFAULT_CALL_TIMEOUT && left < DEFAULT_CALL_TIMEOUT + Duration::from_secs(5),
        "{left:?}"
    );
}
