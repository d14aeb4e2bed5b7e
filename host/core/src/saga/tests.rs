//! The orchestrator's semantics (the README's "Semantics" section), with closure steps: fast and deterministic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::expr::Expr;
use crate::json::Json;

/// Everything the steps of a test did, in order: "invoke a", "compensate b {data}".
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// How a test step behaves.
#[derive(Clone, Default)]
struct Behaviour {
    fail: bool,
    permanent: bool,
    fail_times: u32,
    skip: bool,
    sleep_ms: u64,
    compensation: Option<Value>,
    error_compensation: Option<Value>,
    compensate_fails: bool,
    barrier: Option<Arc<tokio::sync::Barrier>>,
}

struct Flow {
    steps: Vec<StepSpec>,
    impls: Vec<Arc<dyn Step>>,
    log: Log,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            steps: Vec::new(),
            impls: Vec::new(),
            log: Log::default(),
        }
    }

    /// Declares step `name`; its output is `{"step": name, "input": input}`.
    fn step(&mut self, name: &str, behaviour: Behaviour) -> usize {
        let log = self.log.clone();
        let comp_log = self.log.clone();
        let label = name.to_string();
        let comp_label = name.to_string();
        let b = behaviour.clone();
        let step = FnStep::new(move |input: Json, call: StepCall| {
            let log = log.clone();
            let label = label.clone();
            let b = b.clone();
            async move {
                log.push(format!("invoke {label} #{}", call.attempt));
                if let Some(barrier) = &b.barrier {
                    barrier.wait().await;
                }
                if b.sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(b.sleep_ms)).await;
                }
                log.push(format!("end {label}"));
                if b.fail || call.attempt <= b.fail_times {
                    let mut failure =
                        StepFailure::new(FailureKind::InvalidData, format!("{label} failed"));
                    failure.permanent = b.permanent;
                    failure.compensation_data = b.error_compensation.clone().map(Json::from_value);
                    return Err(failure);
                }
                if b.skip {
                    return Ok(Invoked::Skip);
                }
                let output = Json::from_value(json!({"step": label, "input": input.value()}));
                Ok(Invoked::Done {
                    output,
                    compensation: b.compensation.clone().map(Json::from_value),
                })
            }
        })
        .with_compensate(move |data: Option<Json>, call: StepCall| {
            let log = comp_log.clone();
            let label = comp_label.clone();
            let fails = behaviour.compensate_fails;
            async move {
                let data = data
                    .map(|d| d.text().to_string())
                    .unwrap_or_else(|| "-".into());
                log.push(format!("compensate {label} {data} #{}", call.attempt));
                if fails {
                    return Err(StepFailure::new(
                        FailureKind::Unknown,
                        format!("undo of {label} failed"),
                    ));
                }
                Ok(())
            }
        });
        self.steps.push(StepSpec {
            name: name.to_string(),
            policy: StepPolicy::default(),
        });
        self.impls.push(Arc::new(step));
        self.steps.len() - 1
    }

    fn saga(&self, flow: Vec<Entry>, output: Option<&str>) -> Saga {
        self.saga_within(flow, output, None)
    }

    /// [`Flow::saga`] with a workflow `timeout`.
    fn saga_within(
        &self,
        flow: Vec<Entry>,
        output: Option<&str>,
        timeout: Option<Duration>,
    ) -> Saga {
        let workflow = Workflow {
            name: "test".into(),
            steps: self.steps.clone(),
            flow: flow.into(),
            output: output.map(|o| Expr::compile(o).unwrap()),
            timeout,
            output_check: None,
        };
        Saga::new(Arc::new(workflow), self.impls.clone())
    }

    fn run_entry(&self, step: usize, input: Option<&str>, bind: Option<&str>) -> Entry {
        self.run_with(step, input, bind, self.steps[step].policy.clone())
    }

    fn run_with(
        &self,
        step: usize,
        input: Option<&str>,
        bind: Option<&str>,
        policy: StepPolicy,
    ) -> Entry {
        Entry::Run(Call {
            step,
            node: self.steps[step].name.clone(),
            input: input.map(|i| Expr::compile(i).unwrap()),
            bind: bind.map(str::to_string),
            policy,
        })
    }
}

async fn run(saga: &Saga, input: Value) -> RunReport {
    saga.run(RunRequest::new(Json::from_value(input))).await
}

fn actions(report: &RunReport) -> Vec<String> {
    report
        .trace
        .iter()
        .map(|t| format!("{} {}", t.action.as_str(), t.step))
        .collect()
}

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

fn with_policy(on_permanent_failure: OnFailure) -> StepPolicy {
    StepPolicy {
        on_permanent_failure,
        ..Default::default()
    }
}

#[tokio::test]
async fn continue_records_the_error_binds_null_and_ends_done_partial() {
    let mut f = Flow::new();
    let a = f.step(
        "a",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_with(a, None, Some("ra"), with_policy(OnFailure::Continue)),
        f.run_entry(b, Some("ra"), Some("rb")),
    ];
    let report = run(&f.saga(flow, Some("rb.input")), json!(1)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert!(report.partial);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].step.as_deref(), Some("a"));
    assert_eq!(report.output.unwrap().value(), &json!(null));
}

#[tokio::test]
async fn skip_skips_everything_after_the_step() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let bad = f.step(
        "bad",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let c = f.step("c", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, Some("ra")),
        f.run_with(bad, None, Some("rbad"), with_policy(OnFailure::Skip)),
        f.run_entry(c, None, Some("rc")),
    ];
    let report = run(&f.saga(flow, Some("{'a': ra.step, 'c': rc}")), json!(1)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert!(report.partial);
    assert_eq!(
        report.output.as_ref().unwrap().value(),
        &json!({"a": "a", "c": null})
    );
    assert_eq!(actions(&report), ["invoke a", "invoke bad"]);
}

#[tokio::test]
async fn skip_to_resumes_at_the_named_entry() {
    let mut f = Flow::new();
    let bad = f.step(
        "bad",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let skipped = f.step("skipped", Behaviour::default());
    let target = f.step("target", Behaviour::default());
    let after = f.step("after", Behaviour::default());
    let flow = vec![
        f.run_with(bad, None, None, with_policy(OnFailure::SkipTo("t".into()))),
        f.run_entry(skipped, None, Some("s")),
        f.run_entry(target, None, Some("t")),
        f.run_entry(after, Some("{'s': s, 't': t.step}"), Some("x")),
    ];
    let report = run(&f.saga(flow, Some("x.input")), json!(1)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(
        actions(&report),
        ["invoke bad", "invoke target", "invoke after"]
    );
    assert_eq!(
        report.output.unwrap().value(),
        &json!({"s": null, "t": "target"})
    );
}

#[tokio::test]
async fn a_continued_failure_is_compensated_if_the_run_later_fails() {
    let mut f = Flow::new();
    let a = f.step(
        "a",
        Behaviour {
            fail: true,
            permanent: true,
            error_compensation: Some(json!("half")),
            ..Default::default()
        },
    );
    let b = f.step(
        "b",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let flow = vec![
        f.run_with(a, None, None, with_policy(OnFailure::Continue)),
        f.run_entry(b, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(1)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(
        actions(&report),
        ["invoke a", "invoke b", "compensate b", "compensate a"]
    );
    assert_eq!(f.log.lines().last().unwrap(), "compensate a \"half\" #1");
}

fn for_each(
    f: &Flow,
    step: usize,
    items: &str,
    input: &str,
    bind: &str,
    concurrency: usize,
) -> Entry {
    Entry::ForEach {
        items: Expr::compile(items).unwrap(),
        call: Arc::new(Call {
            step,
            node: f.steps[step].name.clone(),
            input: Some(Expr::compile(input).unwrap()),
            bind: Some(bind.into()),
            policy: f.steps[step].policy.clone(),
        }),
        concurrency,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_calls_once_per_item_and_collects_in_order() {
    let mut f = Flow::new();
    let each = f.step(
        "each",
        Behaviour {
            sleep_ms: 5,
            ..Default::default()
        },
    );
    let flow = vec![for_each(
        &f,
        each,
        "input.items",
        "{'item': item, 'index': index}",
        "out",
        3,
    )];
    let report = run(
        &f.saga(flow, Some("out.map(o, o.input.item)")),
        json!({"items": ["a", "b", "c", "d"]}),
    )
    .await;
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(report.output.unwrap().value(), &json!(["a", "b", "c", "d"]));
    let mut nodes: Vec<String> = report
        .trace
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["each[0]", "each[1]", "each[2]", "each[3]"]);
}

#[tokio::test]
async fn for_each_with_a_failing_item_compensates_every_completed_item() {
    let mut f = Flow::new();
    let log = f.log.clone();
    f.steps.push(StepSpec {
        name: "each".into(),
        policy: StepPolicy::default(),
    });
    let invoke_log = log.clone();
    f.impls.push(Arc::new(
        FnStep::new(move |input: Json, call: StepCall| {
            let log = invoke_log.clone();
            async move {
                log.push(format!("invoke {}", call.node));
                if input.value() == &json!(3) {
                    return Err(
                        StepFailure::new(FailureKind::Conflict, "item 3 is taken").permanent()
                    );
                }
                Ok(Invoked::done(input))
            }
        })
        .with_compensate(move |data: Option<Json>, call: StepCall| {
            let log = log.clone();
            async move {
                log.push(format!(
                    "compensate {} {}",
                    call.node,
                    data.map(|d| d.text().to_string()).unwrap_or("-".into())
                ));
                Ok(())
            }
        }),
    ));
    let flow = vec![for_each(&f, 0, "input", "item", "out", 1)];
    let report = run(&f.saga(flow, None), json!([1, 2, 3, 4])).await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(
        f.log.lines(),
        [
            "invoke each[0]",
            "invoke each[1]",
            "invoke each[2]",
            "compensate each[2] -",
            "compensate each[1] 2",
            "compensate each[0] 1"
        ]
    );
}

#[tokio::test]
async fn hook_handlers_run_in_order_and_are_compensated_as_steps() {
    let mut f = Flow::new();
    let first = f.step("created.first", Behaviour::default());
    let second = f.step("created.second", Behaviour::default());
    let bad = f.step(
        "bad",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let handler = |f: &Flow, step: usize| Call {
        step,
        node: f.steps[step].name.clone(),
        input: None,
        bind: None,
        policy: StepPolicy::default(),
    };
    let flow = vec![
        Entry::Hook {
            name: "created".into(),
            input: Some(Expr::compile("{'id': 1}").unwrap()),
            handlers: vec![handler(&f, first), handler(&f, second)],
            bind: Some("h".into()),
        },
        f.run_entry(bad, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(0)).await;
    assert_eq!(
        actions(&report),
        [
            "invoke created.first",
            "invoke created.second",
            "invoke bad",
            "compensate bad",
            "compensate created.second",
            "compensate created.first"
        ]
    );
    assert_eq!(report.events[0].name, "hook.created");
    assert_eq!(
        report.trace[0].input.as_ref().unwrap().value(),
        &json!({"id": 1})
    );
}

#[tokio::test]
async fn a_hook_without_handlers_does_nothing() {
    let f = Flow::new();
    let flow = vec![Entry::Hook {
        name: "nobody".into(),
        input: None,
        handlers: vec![],
        bind: Some("h".into()),
    }];
    let report = run(&f.saga(flow, Some("h")), json!(0)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(report.output.unwrap().value(), &json!([]));
}

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

/// A recorder that keeps everything in memory, like the journal would.
#[derive(Default)]
struct MemoryRecorder {
    history: Mutex<History>,
    seq: std::sync::atomic::AtomicU64,
}

impl Recorder for MemoryRecorder {
    fn call_started(&self, call: &CallStart<'_>) -> Result<(), RecordError> {
        self.history
            .lock()
            .unwrap()
            .started(call.node, call.action, call.attempt);
        Ok(())
    }
    fn call_finished(
        &self,
        node: &str,
        action: Action,
        attempt: u32,
        record: &CallRecord,
    ) -> Result<u64, RecordError> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.history
            .lock()
            .unwrap()
            .finished(seq, node, action, attempt, record.clone());
        Ok(seq)
    }
    fn event(&self, _: &Event) -> Result<(), RecordError> {
        Ok(())
    }
    fn compensating(&self, _: &RunError) -> Result<(), RecordError> {
        Ok(())
    }
}

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

fn resume(recorder: &Arc<MemoryRecorder>, cancel: bool) -> Durability {
    Durability {
        recorder: recorder.clone(),
        history: recorder.history.lock().unwrap().clone(),
        cancel,
        ..Default::default()
    }
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

mod time;
