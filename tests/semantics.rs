//! The whole programming model through the real binary with real components
//! (the `probe` step, scripted by its config): retries, timeouts, failure
//! policies, nested workflows, hooks, subscribers, query, for-each, schemas.

mod common;

use common::Sandbox;
use serde_json::{Value, json};

/// `[steps.NAME]` of the probe with `config`.
fn probe(name: &str, options: &str) -> String {
    format!("[steps.{name}]\ncomponent = \"{{probe}}\"\n{options}\n\n")
}

fn run(sandbox: &Sandbox, text: &str, input: &str) -> (i32, Value, Vec<String>) {
    let manifest = sandbox.manifest("main.toml", text);
    let finished = sandbox.run(&manifest, input);
    let calls = finished.calls();
    (finished.code, finished.report(), calls)
}

fn attempts(report: &Value, node: &str, action: &str) -> Vec<u64> {
    report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["action"] == action
                && (t["node"] == node || (t["node"].is_null() && t["step"] == node))
        })
        .map(|t| t["attempt"].as_u64().unwrap())
        .collect()
}

#[test]
fn retries_make_at_most_max_plus_one_calls_and_a_permanent_error_none_more() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"r\"\n{}{}{}[[flow]]\nrun = \"flaky\"\n[[flow]]\nrun = \"exhausted\"\n",
        probe(
            "flaky",
            "retries = { max = 3, interval = \"5ms\" }\nconfig = { fail-times = 2, output = 1 }"
        ),
        probe(
            "exhausted",
            "retries = { max = 2, interval = \"5ms\", backoff = \"exponential\" }\nconfig = { fail-always = true }"
        ),
        probe("unused", "")
    );
    let (code, report, _) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    assert_eq!(attempts(&report, "flaky", "invoke"), [1, 2, 3]);
    assert_eq!(attempts(&report, "exhausted", "invoke"), [1, 2, 3]);
    assert_eq!(report["error"]["step"], "exhausted");
    assert_eq!(report["error"]["permanent"], false);

    let text = format!(
        "[workflow]\nname = \"p\"\n{}[[flow]]\nrun = \"broken\"\n",
        probe(
            "broken",
            "retries = { max = 5 }\nconfig = { fail-always = true, permanent = true, error-kind = \"not-found\", error-message = \"brand b1 is gone\" }"
        )
    );
    let (_, report, _) = run(&sandbox, &text, "{}");
    assert_eq!(attempts(&report, "broken", "invoke"), [1]);
    // The guest's error kind and message reach the report unchanged.
    assert_eq!(report["error"]["kind"], "not-found");
    assert_eq!(report["error"]["message"], "brand b1 is gone");
    assert_eq!(report["trace"][0]["error"]["kind"], "not-found");
}

#[test]
fn an_infinite_loop_times_out_on_every_attempt_and_is_compensated() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"t\"\n{}{}[[flow]]\nrun = \"first\"\n[[flow]]\nrun = \"spin\"\n",
        probe("first", "config = { output = 1 }"),
        probe(
            "spin",
            "timeout = \"200ms\"\nretries = { max = 1 }\nconfig = { loop-forever = true }"
        )
    );
    let (code, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    assert_eq!(report["error"]["kind"], "timeout");
    assert_eq!(
        calls,
        [
            "invoke first",
            "invoke spin",
            "invoke spin",
            "compensate spin",
            "compensate first"
        ]
    );
    assert_eq!(attempts(&report, "spin", "invoke"), [1, 2]);
}

#[test]
fn a_parallel_sibling_fails_while_another_still_runs() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"p\"\n{}{}{}{}[[flow]]\nrun = \"first\"\n[[flow]]\nparallel = [{{ run = \"slow\" }}, {{ run = \"bad\" }}]\n[[flow]]\nrun = \"never\"\n",
        probe("first", "config = { output = 1 }"),
        probe("slow", "config = { sleep-ms = 300, output = \"slow\" }"),
        probe("bad", "config = { fail-always = true, permanent = true }"),
        probe("never", "")
    );
    let (code, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    let trace = report["trace"].as_array().unwrap();
    let find = |step: &str, action: &str| {
        trace
            .iter()
            .find(|t| t["step"] == step && t["action"] == action)
            .unwrap()
            .clone()
    };
    let slow = find("slow", "invoke");
    let bad = find("bad", "invoke");
    // Both started together; `bad` failed while `slow` still ran.
    assert!(
        (slow["started_ms"].as_f64().unwrap() - bad["started_ms"].as_f64().unwrap()).abs() < 200.0
    );
    let slow_end = slow["started_ms"].as_f64().unwrap() + slow["duration_ms"].as_f64().unwrap();
    let bad_end = bad["started_ms"].as_f64().unwrap() + bad["duration_ms"].as_f64().unwrap();
    assert!(bad_end < slow_end);
    // Compensation began only after `slow` finished, and covers it.
    let first_compensation = trace.iter().find(|t| t["action"] == "compensate").unwrap();
    assert!(first_compensation["started_ms"].as_f64().unwrap() >= slow_end);
    assert_eq!(
        &calls[3..],
        ["compensate slow", "compensate bad", "compensate first"]
    );
    assert!(!calls.iter().any(|c| c.contains("never")));
}

#[test]
fn compensation_data_and_config_reach_the_step() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"c\"\n{}{}{}[[flow]]\nrun = \"own\"\n[[flow]]\nrun = \"default\"\n[[flow]]\nrun = \"bad\"\n",
        probe(
            "own",
            "config = { output = { id = \"o1\" }, compensation = { undo = \"o1\" } }"
        ),
        probe("default", "config = { output = { id = \"d1\" } }"),
        probe(
            "bad",
            "config = { fail-always = true, permanent = true, error-compensation = [\"half\"] }"
        )
    );
    let (_, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(
        &calls[3..],
        ["compensate bad", "compensate default", "compensate own"]
    );
    let trace = report["trace"].as_array().unwrap();
    assert_eq!(trace[3]["input"], json!(["half"]));
    assert_eq!(trace[4]["input"], json!({"id": "d1"}));
    assert_eq!(trace[5]["input"], json!({"undo": "o1"}));
}

#[test]
fn skipped_and_compensate_false_steps_are_not_compensated() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"s\"\n{}{}{}[[flow]]\nrun = \"skipper\"\nas = \"s\"\n[[flow]]\nrun = \"kept\"\n[[flow]]\nrun = \"bad\"\ninput = \"{{'s': s}}\"\n",
        probe("skipper", "config = { skip = true }"),
        probe("kept", "compensate = false\nconfig = { output = 1 }"),
        probe("bad", "config = { fail-always = true, permanent = true }")
    );
    let (_, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(
        calls,
        [
            "invoke skipper",
            "invoke kept",
            "invoke bad",
            "compensate bad"
        ]
    );
    assert_eq!(report["trace"][0]["outcome"], "skipped");
    assert_eq!(report["trace"][2]["input"], json!({"s": null}));
}

#[test]
fn a_failing_compensation_is_retried_then_reported_and_the_others_still_run() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"f\"\n{}{}{}{}[[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"flaky-undo\"\n[[flow]]\nrun = \"broken-undo\"\n[[flow]]\nrun = \"bad\"\n",
        probe("a", "config = { output = 1 }"),
        probe(
            "flaky-undo",
            "retries = { max = 2 }\nconfig = { output = 1, compensate-fail-times = 1 }"
        ),
        probe(
            "broken-undo",
            "retries = { max = 1 }\nconfig = { output = 1, compensate-fail-always = true }"
        ),
        probe("bad", "config = { fail-always = true, permanent = true }")
    );
    let (code, report, _) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    assert_eq!(report["status"], "failed");
    let failures = report["error"]["compensation_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["step"], "broken-undo");
    assert_eq!(attempts(&report, "broken-undo", "compensate"), [1, 2]);
    assert_eq!(attempts(&report, "flaky-undo", "compensate"), [1, 2]);
    assert_eq!(attempts(&report, "a", "compensate"), [1]);
    assert_eq!(report["error"]["step"], "bad");
}

#[test]
fn on_permanent_failure_continue_skip_and_skip_to() {
    let sandbox = Sandbox::new();
    let base = format!(
        "{}{}{}{}",
        probe("a", "config = { echo-input = true }"),
        probe("bad", "config = { fail-always = true, permanent = true }"),
        probe("b", "config = { output = \"b\" }"),
        probe("c", "config = { output = \"c\" }")
    );
    let flow = |policy: &str| {
        format!(
            "[workflow]\nname = \"o\"\n{base}[[flow]]\nrun = \"bad\"\nas = \"x\"\non-permanent-failure = \"{policy}\"\n[[flow]]\nrun = \"b\"\nas = \"rb\"\n[[flow]]\nrun = \"c\"\nas = \"rc\"\n[output]\nvalue = \"{{'x': x, 'b': rb, 'c': rc}}\"\n"
        )
    };
    let (code, report, calls) = run(&sandbox, &flow("continue"), "{}");
    assert_eq!(code, 0);
    assert_eq!(report["status"], "done");
    assert_eq!(report["partial"], true);
    assert_eq!(report["errors"][0]["step"], "bad");
    assert_eq!(report["output"], json!({"x": null, "b": "b", "c": "c"}));
    assert_eq!(calls, ["invoke bad", "invoke b", "invoke c"]);

    let (_, report, calls) = run(&sandbox, &flow("skip"), "{}");
    assert_eq!(report["status"], "done");
    assert_eq!(report["partial"], true);
    assert_eq!(report["output"], json!({"x": null, "b": null, "c": null}));
    assert_eq!(calls, ["invoke bad"]);

    let (_, report, calls) = run(&sandbox, &flow("skip-to:rc"), "{}");
    assert_eq!(report["output"], json!({"x": null, "b": null, "c": "c"}));
    assert_eq!(calls, ["invoke bad", "invoke c"]);
}

#[test]
fn a_nested_workflow_is_compensated_in_its_place_when_the_parent_fails_later() {
    let sandbox = Sandbox::new();
    sandbox.manifest(
        "child.toml",
        &format!(
            "[workflow]\nname = \"child\"\n{}{}[[flow]]\nrun = \"c1\"\nas = \"r1\"\n[[flow]]\nrun = \"c2\"\ninput = \"r1\"\nas = \"r2\"\n[output]\nvalue = \"{{'child': r2}}\"\n",
            probe("c1", "config = { echo-input = true, output = { c1 = true } }"),
            probe("c2", "config = { echo-input = true, output = { c2 = true } }")
        ),
    );
    let text = format!(
        "[workflow]\nname = \"parent\"\n{}{}[[flow]]\nrun = \"p1\"\n[[flow]]\nworkflow = \"child.toml\"\ninput = \"{{'from': 'parent'}}\"\nas = \"kid\"\n[[flow]]\nrun = \"boom\"\ninput = \"kid\"\n",
        probe("p1", "config = { output = 1 }"),
        probe("boom", "config = { fail-always = true, permanent = true }")
    );
    let (code, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    assert_eq!(
        calls,
        [
            "invoke p1",
            "invoke kid/c1",
            "invoke kid/c2",
            "invoke boom",
            "compensate boom",
            "compensate kid/c2",
            "compensate kid/c1",
            "compensate p1",
        ]
    );
    // The child's output, computed from its own scope, reached the parent.
    assert_eq!(
        report["trace"][3]["input"],
        json!({"child": {"c2": true, "c1": true, "from": "parent"}})
    );

    // When the child fails, the parent compensates what ran before it.
    sandbox.manifest(
        "child.toml",
        &format!(
            "[workflow]\nname = \"child\"\n{}[[flow]]\nrun = \"c1\"\n",
            probe("c1", "config = { fail-always = true, permanent = true }")
        ),
    );
    let text = format!(
        "[workflow]\nname = \"parent\"\n{}[[flow]]\nrun = \"p1\"\n[[flow]]\nworkflow = \"child.toml\"\n",
        probe("p1", "config = { output = 1 }")
    );
    let (_, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(report["status"], "reverted");
    assert_eq!(
        calls,
        [
            "invoke p1",
            "invoke child/c1",
            "compensate child/c1",
            "compensate p1"
        ]
    );
}

#[test]
fn a_nested_workflow_cycle_is_rejected_by_check() {
    let sandbox = Sandbox::new();
    let a = sandbox.manifest(
        "a.toml",
        "[workflow]\nname = \"a\"\n[[flow]]\nworkflow = \"b.toml\"\n",
    );
    sandbox.manifest(
        "b.toml",
        "[workflow]\nname = \"b\"\n[[flow]]\nworkflow = \"a.toml\"\n",
    );
    let finished = sandbox.host(&["check", a.to_str().unwrap()]);
    assert_eq!(finished.code, 2);
    assert!(
        finished
            .stderr
            .contains("nested workflows form a cycle: a.toml → b.toml → a.toml"),
        "{}",
        finished.stderr
    );
}

#[test]
fn hook_handlers_from_the_manifest_and_an_extension_run_in_order_and_compensate() {
    let sandbox = Sandbox::new();
    sandbox.manifest(
        "loyalty.toml",
        "# An extension: adds a handler to the `created` hook of workflow `hooked`.\n[extension]\nworkflow = \"hooked\"\n\n[[hooks.created]]\nname = \"loyalty\"\ncomponent = \"{probe}\"\nconfig = { echo-input = true, output = { loyalty = true } }\n",
    );
    let text = format!(
        "[workflow]\nname = \"hooked\"\n{}{}[[hooks.created]]\nname = \"notify\"\ncomponent = \"{{probe}}\"\nconfig = {{ echo-input = true, output = {{ notified = true }} }}\n\n[[flow]]\nrun = \"create\"\nas = \"thing\"\n[[flow]]\nhook = \"created\"\ninput = \"{{'id': thing.id}}\"\nas = \"handled\"\n[[flow]]\nhook = \"nobody-listens\"\n[[flow]]\nrun = \"bad\"\ninput = \"handled\"\n",
        probe("create", "config = { output = { id = \"t1\" } }"),
        probe("bad", "config = { fail-always = true, permanent = true }")
    );
    let (_, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(
        calls,
        [
            "invoke create",
            "invoke created.notify",
            "invoke created.loyalty",
            "invoke bad",
            "compensate bad",
            "compensate created.loyalty",
            "compensate created.notify",
            "compensate create",
        ]
    );
    assert_eq!(
        report["trace"][3]["input"],
        json!([{"notified": true, "id": "t1"}, {"loyalty": true, "id": "t1"}])
    );
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["hook.created", "hook.nobody-listens"]);
}

#[test]
fn an_extension_for_a_hook_that_does_not_exist_is_an_error_in_that_file() {
    let sandbox = Sandbox::new();
    sandbox.manifest(
        "ext.toml",
        "[extension]\nworkflow = \"w\"\n\n[[hooks.creatd]]\ncomponent = \"{probe}\"\n",
    );
    let manifest = sandbox.manifest(
        "main.toml",
        &format!(
            "[workflow]\nname = \"w\"\n{}[[flow]]\nrun = \"a\"\n[[flow]]\nhook = \"created\"\n",
            probe("a", "")
        ),
    );
    let finished = sandbox.host(&["check", "--manifest-only", manifest.to_str().unwrap()]);
    assert_eq!(finished.code, 2);
    assert!(
        finished
            .stderr
            .contains("ext.toml:4:9: the workflow 'w' has no hook 'creatd'"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("its hooks: created"),
        "{}",
        finished.stderr
    );
}

#[test]
fn subscribers_receive_the_events_after_the_run_and_a_failing_one_changes_nothing() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("events.jsonl");
    let audit = common::component("audit-subscriber");
    let text = format!(
        "[workflow]\nname = \"s\"\n{}[[flow]]\nrun = \"a\"\n[[flow]]\nhook = \"done\"\n\n[[subscribers]]\nname = \"to-file\"\ncommand = \"cat >> {} && echo >> {}\"\n\n[[subscribers]]\nname = \"audit\"\ncomponent = \"{}\"\nevents = [\"run.*\", \"hook.*\", \"fail.*\"]\n\n[[subscribers]]\nname = \"broken\"\ncommand = \"exit 3\"\nevents = [\"run.done\"]\n",
        probe(
            "a",
            "grants = { events = true }\nconfig = { output = 1, emit = \"fail.on-purpose\" }"
        ),
        log.display(),
        log.display(),
        audit.display()
    );
    let manifest = sandbox.manifest("main.toml", &text);
    let finished = sandbox.run(&manifest, "{}");
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    let names: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "run.started",
            "fail.on-purpose",
            "step.completed",
            "hook.done",
            "run.done"
        ]
    );
    // The component subscriber logged what it was given, and refused one event.
    assert!(
        finished.stderr.contains("audit run.started"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("audit hook.done"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("audit step.completed"),
        "filtered out: {}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("refusing fail.on-purpose on purpose"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("exited with exit status: 3"),
        "{}",
        finished.stderr
    );
}

#[test]
fn query_reads_entities_without_a_component() {
    let sandbox = Sandbox::new();
    let create = sandbox.run(
        &common::brand_manifest("create-brand.toml"),
        r#"{"name": "Acme"}"#,
    );
    assert_eq!(create.code, 0, "{}", create.stderr);
    sandbox.run(
        &common::brand_manifest("create-brand.toml"),
        r#"{"name": "Beta"}"#,
    );
    let text = "[workflow]\nname = \"q\"\n[[flow]]\nquery = { entity = \"brand\", filters = \"{'name': input.name}\", fields = [\"id\", \"name\"] }\nas = \"found\"\n[[flow]]\nquery = { entity = \"brand\" }\nas = \"all\"\n[output]\nvalue = \"{'found': found, 'count': size(all)}\"\n";
    let (code, report, calls) = run(&sandbox, text, r#"{"name": "Beta"}"#);
    assert_eq!(code, 0);
    let found = report["output"]["found"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["name"], "Beta");
    assert_eq!(
        found[0].as_object().unwrap().len(),
        2,
        "only the requested fields"
    );
    assert_eq!(report["output"]["count"], 2);
    assert_eq!(calls, ["invoke found", "invoke all"]);
}

#[test]
fn for_each_with_one_failing_item_compensates_every_completed_item() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"fe\"\n{}[[flow]]\nfor-each = \"input.items\"\nrun = \"each\"\ninput = \"{{'n': item, 'i': index}}\"\nas = \"out\"\nconcurrency = 2\n[output]\nvalue = \"out\"\n",
        probe("each", "config = { echo-input = true }")
    );
    let (code, report, _) = run(&sandbox, &text, r#"{"items": [10, 20, 30]}"#);
    assert_eq!(code, 0);
    assert_eq!(
        report["output"],
        json!([{"n": 10, "i": 0}, {"n": 20, "i": 1}, {"n": 30, "i": 2}])
    );

    // Item 2 of 4 fails (its input breaks the step's input-schema): no item
    // starts after it; those that completed are compensated.
    std::fs::write(
        sandbox.path("item.schema.json"),
        r#"{"type": "object", "required": ["ok"]}"#,
    )
    .unwrap();
    let text = format!(
        "[workflow]\nname = \"fe\"\n{}{}[[flow]]\nfor-each = \"input.items\"\nrun = \"each\"\nas = \"out\"\n[[flow]]\nrun = \"after\"\n",
        probe(
            "each",
            "input-schema = \"item.schema.json\"\nconfig = { echo-input = true }"
        ),
        probe("after", "")
    );
    let manifest = sandbox.manifest("main.toml", &text);
    let items = r#"{"items": [{"ok": 1}, {"ok": 2}, {"bad": true}, {"ok": 4}]}"#;
    let finished = sandbox.run(&manifest, items);
    let report = finished.report();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(
        finished.calls(),
        [
            "invoke each[0]",
            "invoke each[1]",
            "invoke each[2]",
            "compensate each[2]",
            "compensate each[1]",
            "compensate each[0]"
        ]
    );
    assert_eq!(report["error"]["kind"], "invalid-data");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("item.schema.json"),
        "{report:#}"
    );
}

#[test]
fn an_input_that_breaks_the_schema_fails_before_any_step_with_every_violation() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("input.schema.json"),
        r#"{"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer"}}}"#,
    )
    .unwrap();
    let text = format!(
        "[workflow]\nname = \"s\"\ninput-schema = \"input.schema.json\"\n{}[[flow]]\nrun = \"a\"\n",
        probe("a", "")
    );
    let manifest = sandbox.manifest("main.toml", &text);
    let finished = sandbox.run(&manifest, r#"{"name": "A", "age": "old"}"#);
    assert_eq!(finished.code, 2);
    assert!(finished.stdout.is_empty());
    assert!(finished.stderr.contains("at /name:"), "{}", finished.stderr);
    assert!(finished.stderr.contains("at /age:"), "{}", finished.stderr);
    assert!(sandbox.run(&manifest, r#"{"name": "Acme"}"#).code == 0);
}

#[test]
fn an_output_that_breaks_a_step_schema_fails_the_step_and_compensates_it() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("out.schema.json"),
        r#"{"type": "object", "required": ["id"]}"#,
    )
    .unwrap();
    let text = format!(
        "[workflow]\nname = \"s\"\n{}[[flow]]\nrun = \"a\"\n",
        probe(
            "a",
            "output-schema = \"out.schema.json\"\nconfig = { output = { name = \"no id\" } }"
        )
    );
    let (code, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    assert_eq!(report["error"]["kind"], "invalid-output");
    assert_eq!(calls, ["invoke a", "compensate a"]);
    assert_eq!(
        report["trace"][1]["input"],
        json!({"name": "no id"}),
        "the compensation gets the output to undo"
    );
}

#[test]
fn the_workflow_timeout_interrupts_the_running_step_and_compensates() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"t\"\ntimeout = \"150ms\"\n{}{}[[flow]]\nrun = \"slow\"\n[[flow]]\nrun = \"late\"\n",
        probe("slow", "config = { sleep-ms = 300, output = 1 }"),
        probe("late", "")
    );
    let (code, report, calls) = run(&sandbox, &text, "{}");
    assert_eq!(code, 1);
    assert_eq!(report["error"]["kind"], "timeout");
    // The step sleeping past the workflow's timeout is interrupted (it used
    // to run to its end), and no later step starts.
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the workflow's timeout of 150ms"),
        "{message}"
    );
    assert_eq!(report["trace"][0]["outcome"], "error", "{report:#}");
    assert_eq!(calls, ["invoke slow", "compensate slow"]);
}

#[test]
fn transform_and_when_work_inside_parallel_and_then() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"tw\"\n{}[[flow]]\nparallel = [\n  {{ transform = \"input.n * 2\", as = \"double\" }},\n  {{ when = \"input.n > 1\", then = [{{ transform = \"'big'\", as = \"size\" }}, {{ when = \"input.n > 100\", then = [{{ run = \"a\", as = \"huge\" }}] }}] }},\n]\n[output]\nvalue = \"{{'double': double, 'size': size, 'huge': huge}}\"\n",
        probe("a", "")
    );
    let (code, report, calls) = run(&sandbox, &text, r#"{"n": 5}"#);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["output"],
        json!({"double": 10, "size": "big", "huge": null})
    );
    assert!(calls.is_empty());
}
