//! `for_each` over items, and hooks with their handlers.

use super::*;

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
