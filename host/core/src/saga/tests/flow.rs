//! One run's flow: bindings, compensation in reverse, parallel siblings,
//! `when`, `transform`, retries, step timeouts, idempotency keys and events.

use super::*;

#[tokio::test]
async fn linear_success_binds_outputs_and_runs_the_output_expression() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_entry(a, Some("input.x"), Some("ra")),
        f.run_entry(b, Some("ra.step"), Some("rb")),
    ];
    let saga = f.saga(flow, Some("{'a': ra.input, 'b': rb.input}"));
    let report = run(&saga, json!({"x": 7})).await;
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(
        report.output.as_ref().unwrap().value(),
        &json!({"a": 7, "b": "a"})
    );
    assert_eq!(actions(&report), ["invoke a", "invoke b"]);
    assert!(report.error.is_none());
}

#[tokio::test]
async fn linear_failure_compensates_in_reverse_including_the_failing_step_without_data() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step(
        "b",
        Behaviour {
            compensation: Some(json!({"undo": "b"})),
            ..Default::default()
        },
    );
    let c = f.step(
        "c",
        Behaviour {
            fail: true,
            ..Default::default()
        },
    );
    let d = f.step("d", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, Some("ra")),
        f.run_entry(b, None, None),
        f.run_entry(c, None, None),
        f.run_entry(d, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(1)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(
        f.log.lines(),
        [
            "invoke a #1",
            "end a",
            "invoke b #1",
            "end b",
            "invoke c #1",
            "end c",
            "compensate c - #1",
            "compensate b {\"undo\":\"b\"} #1",
            "compensate a {\"input\":1,\"step\":\"a\"} #1",
        ]
    );
    let error = report.error.clone().unwrap();
    assert_eq!(error.step.as_deref(), Some("c"));
    assert_eq!(error.kind, FailureKind::InvalidData);
    assert!(report.output.is_none());
}

#[tokio::test]
async fn a_failing_step_with_compensation_data_receives_it() {
    let mut f = Flow::new();
    let a = f.step(
        "a",
        Behaviour {
            fail: true,
            permanent: true,
            error_compensation: Some(json!(["half"])),
            ..Default::default()
        },
    );
    let report = run(&f.saga(vec![f.run_entry(a, None, None)], None), json!(null)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(f.log.lines().last().unwrap(), "compensate a [\"half\"] #1");
}

#[tokio::test]
async fn skipped_steps_bind_null_and_are_not_compensated() {
    let mut f = Flow::new();
    let a = f.step(
        "a",
        Behaviour {
            skip: true,
            ..Default::default()
        },
    );
    let b = f.step(
        "b",
        Behaviour {
            fail: true,
            ..Default::default()
        },
    );
    let flow = vec![
        f.run_entry(a, None, Some("ra")),
        f.run_entry(b, Some("ra"), None),
    ];
    let report = run(&f.saga(flow, None), json!({})).await;
    assert_eq!(report.trace[0].outcome, Outcome::Skipped);
    assert_eq!(report.trace[1].input.as_ref().unwrap().text(), "null");
    let compensated: Vec<_> = f
        .log
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("compensate"))
        .collect();
    assert_eq!(compensated, ["compensate b - #1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_siblings_start_together_and_the_next_entry_waits_for_all() {
    let mut f = Flow::new();
    // Each sibling waits at a barrier for the other: this only finishes if both run at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let p = f.step(
        "p",
        Behaviour {
            barrier: Some(barrier.clone()),
            sleep_ms: 30,
            ..Default::default()
        },
    );
    let q = f.step(
        "q",
        Behaviour {
            barrier: Some(barrier),
            ..Default::default()
        },
    );
    let after = f.step("after", Behaviour::default());
    let flow = vec![
        Entry::Parallel(
            vec![
                f.run_entry(p, None, Some("rp")),
                f.run_entry(q, None, Some("rq")),
            ]
            .into(),
        ),
        f.run_entry(after, Some("{'p': rp.step, 'q': rq.step}"), Some("ra")),
    ];
    let saga = f.saga(flow, Some("ra.input"));
    let report = tokio::time::timeout(Duration::from_secs(5), run(&saga, json!({})))
        .await
        .expect("siblings ran together");
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(
        report.output.as_ref().unwrap().value(),
        &json!({"p": "p", "q": "q"})
    );
    let lines = f.log.lines();
    assert_eq!(lines.last().unwrap(), "end after");
    assert!(
        lines.iter().position(|l| l == "invoke after #1") > lines.iter().position(|l| l == "end p")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sibling_waits_for_running_siblings_then_all_completed_are_compensated() {
    let mut f = Flow::new();
    let first = f.step("first", Behaviour::default());
    let slow = f.step(
        "slow",
        Behaviour {
            sleep_ms: 100,
            ..Default::default()
        },
    );
    let bad = f.step(
        "bad",
        Behaviour {
            fail: true,
            ..Default::default()
        },
    );
    let never = f.step("never", Behaviour::default());
    let flow = vec![
        f.run_entry(first, None, None),
        Entry::Parallel(vec![f.run_entry(slow, None, None), f.run_entry(bad, None, None)].into()),
        f.run_entry(never, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(0)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    let lines = f.log.lines();
    let compensations: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("compensate"))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    // `bad` failed first, `slow` completed after it: reverse completion order.
    assert_eq!(compensations, ["slow", "bad", "first"]);
    // `slow` finished before any compensation began.
    let end_slow = lines.iter().position(|l| l == "end slow").unwrap();
    let first_comp = lines
        .iter()
        .position(|l| l.starts_with("compensate"))
        .unwrap();
    assert!(end_slow < first_comp);
    assert!(!lines.iter().any(|l| l.contains("never")));
}

#[tokio::test]
async fn when_runs_then_only_if_the_condition_holds_and_binds_null_otherwise() {
    let mut f = Flow::new();
    let logo = f.step("logo", Behaviour::default());
    let flow = vec![Entry::When {
        condition: Expr::compile("!has(input.logo_url)").unwrap(),
        then: vec![f.run_entry(logo, Some("input.id"), Some("l"))].into(),
        binds: vec!["l".into()],
    }];
    let saga = f.saga(flow, Some("l == null ? 'kept' : l.input"));
    let with_logo = run(&saga, json!({"id": 1, "logo_url": "x"})).await;
    assert_eq!(with_logo.output.unwrap().value(), &json!("kept"));
    let without = run(&saga, json!({"id": 2})).await;
    assert_eq!(without.output.unwrap().value(), &json!(2));
    assert_eq!(f.log.lines(), ["invoke logo #1", "end logo"]);
}

#[tokio::test]
async fn transform_binds_a_computed_value() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let flow = vec![
        Entry::Transform {
            expr: Expr::compile("{'name': input.name + '!'}").unwrap(),
            bind: "t".into(),
        },
        f.run_entry(a, Some("t"), Some("ra")),
    ];
    let report = run(
        &f.saga(flow, Some("ra.input.name")),
        json!({"name": "Acme"}),
    )
    .await;
    assert_eq!(report.output.as_ref().unwrap().value(), &json!("Acme!"));
}

#[tokio::test]
async fn a_failing_compensation_does_not_stop_the_others_and_the_run_ends_failed() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step(
        "b",
        Behaviour {
            compensate_fails: true,
            ..Default::default()
        },
    );
    let c = f.step(
        "c",
        Behaviour {
            fail: true,
            ..Default::default()
        },
    );
    let flow = vec![
        f.run_entry(a, None, None),
        f.run_entry(b, None, None),
        f.run_entry(c, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(0)).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.clone().unwrap();
    assert_eq!(error.step.as_deref(), Some("c"));
    assert_eq!(error.compensation_failures.len(), 1);
    assert_eq!(error.compensation_failures[0].step, "b");
    assert!(f.log.lines().iter().any(|l| l.starts_with("compensate a")));
}

#[tokio::test]
async fn retries_make_at_most_max_plus_one_calls_counting_attempts_from_one() {
    let mut f = Flow::new();
    let flaky = f.step(
        "flaky",
        Behaviour {
            fail_times: 2,
            ..Default::default()
        },
    );
    let policy = StepPolicy {
        retries: RetryPolicy {
            max: 2,
            interval: Duration::from_millis(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let report = run(
        &f.saga(vec![f.run_with(flaky, None, None, policy.clone())], None),
        json!(0),
    )
    .await;
    assert_eq!(report.status, RunStatus::Done);
    let attempts: Vec<u32> = report.trace.iter().map(|t| t.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);

    let mut g = Flow::new();
    let broken = g.step(
        "broken",
        Behaviour {
            fail: true,
            ..Default::default()
        },
    );
    let report = run(
        &g.saga(vec![g.run_with(broken, None, None, policy.clone())], None),
        json!(0),
    )
    .await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(
        report
            .trace
            .iter()
            .filter(|t| t.action == Action::Invoke)
            .count(),
        3
    );
}

#[tokio::test]
async fn a_permanent_error_is_never_retried() {
    let mut f = Flow::new();
    let broken = f.step(
        "broken",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let policy = StepPolicy {
        retries: RetryPolicy {
            max: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let report = run(
        &f.saga(vec![f.run_with(broken, None, None, policy)], None),
        json!(0),
    )
    .await;
    assert_eq!(
        report
            .trace
            .iter()
            .filter(|t| t.action == Action::Invoke)
            .count(),
        1
    );
    assert!(report.error.unwrap().permanent);
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_and_is_compensated() {
    let mut f = Flow::new();
    let slow = f.step(
        "slow",
        Behaviour {
            sleep_ms: 10_000,
            ..Default::default()
        },
    );
    let policy = StepPolicy {
        timeout: Some(Duration::from_millis(20)),
        ..Default::default()
    };
    let report = run(
        &f.saga(vec![f.run_with(slow, None, None, policy)], None),
        json!(0),
    )
    .await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(report.error.as_ref().unwrap().kind, FailureKind::Timeout);
    assert_eq!(actions(&report), ["invoke slow", "compensate slow"]);
}

#[tokio::test]
async fn compensate_false_steps_are_never_compensated() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step(
        "b",
        Behaviour {
            fail: true,
            ..Default::default()
        },
    );
    let no_undo = StepPolicy {
        compensate: false,
        ..Default::default()
    };
    let flow = vec![
        f.run_with(a, None, None, no_undo),
        f.run_entry(b, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(0)).await;
    assert_eq!(actions(&report), ["invoke a", "invoke b", "compensate b"]);
}

#[tokio::test]
async fn an_expression_failure_fails_the_run_and_compensates() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, Some("ra")),
        f.run_entry(b, Some("ra.missing"), None),
    ];
    let report = run(&f.saga(flow, None), json!(0)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    let error = report.error.clone().unwrap();
    assert_eq!(error.kind, FailureKind::Expression);
    assert_eq!(error.step.as_deref(), Some("b"));
    assert_eq!(actions(&report), ["invoke a", "compensate a"]);
}

#[tokio::test]
async fn the_default_output_holds_every_bound_name() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let report = run(
        &f.saga(vec![f.run_entry(a, Some("input"), Some("ra"))], None),
        json!(5),
    )
    .await;
    assert_eq!(
        report.output.as_ref().unwrap().value(),
        &json!({"ra": {"step": "a", "input": 5}})
    );
}

#[tokio::test]
async fn the_idempotency_key_names_workflow_transaction_step_and_action() {
    let mut f = Flow::new();
    let seen = Arc::new(Mutex::new(String::new()));
    let seen2 = seen.clone();
    f.steps.push(StepSpec {
        name: "k".into(),
        policy: StepPolicy::default(),
    });
    f.impls.push(Arc::new(FnStep::new(move |_, call: StepCall| {
        *seen2.lock().unwrap() = call.idempotency_key();
        async { Ok(Invoked::done(Json::null())) }
    })));
    let saga = f.saga(vec![f.run_entry(0, None, None)], None);
    let mut request = RunRequest::new(Json::null());
    request.transaction_id = "tx1".into();
    saga.run(request).await;
    assert_eq!(*seen.lock().unwrap(), "test:tx1:k:invoke");
}

#[tokio::test]
async fn lifecycle_events_are_emitted_in_order() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let b = f.step(
        "b",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let report = run(
        &f.saga(
            vec![f.run_entry(a, None, None), f.run_entry(b, None, None)],
            None,
        ),
        json!(0),
    )
    .await;
    let names: Vec<&str> = report.all_events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "run.started",
            "step.completed",
            "step.failed",
            "run.compensating",
            "run.reverted"
        ]
    );
    assert!(
        report.events.is_empty(),
        "lifecycle events are not in the report"
    );
}
