//! A misbehaving guest fails its step, never the host: infinite loops, memory
//! bombs, traps, garbage output, and capabilities it was not granted.

mod common;

use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::json;

/// A manifest: a `before` probe step that succeeds, then `bad` with `config`.
fn two_steps(bad_options: &str) -> String {
    format!(
        r#"
[workflow]
name = "misbehaving"

[steps.before]
component = "{{probe}}"
config = {{ output = {{ ok = true }} }}

[steps.bad]
component = "{{probe}}"
{bad_options}

[[flow]]
run = "before"
as = "b"

[[flow]]
run = "bad"
"#
    )
}

/// Runs `bad` after `before` and checks the host compensated both and exited normally.
fn assert_step_failed(sandbox: &Sandbox, options: &str, kind: &str) -> serde_json::Value {
    let manifest = sandbox.manifest("m.toml", &two_steps(options));
    let run = sandbox.run(&manifest, "{}");
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let report = run.report();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(report["error"]["kind"], kind, "{report:#}");
    assert_eq!(report["error"]["step"], "bad");
    assert_eq!(
        run.calls(),
        [
            "invoke before",
            "invoke bad",
            "compensate bad",
            "compensate before"
        ]
    );
    report
}

#[test]
fn an_infinite_loop_is_interrupted_at_its_deadline() {
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let report = assert_step_failed(
        &sandbox,
        "timeout = \"300ms\"\nconfig = { loop-forever = true }",
        "timeout",
    );
    let elapsed = started.elapsed();
    // Generous bound (a loaded machine): the point is that it ends.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let duration = report["trace"][1]["duration_ms"].as_f64().unwrap();
    assert!(
        (250.0..5000.0).contains(&duration),
        "interrupted after {duration} ms"
    );
}

#[test]
fn a_memory_bomb_fails_its_step() {
    let sandbox = Sandbox::new();
    let report = assert_step_failed(
        &sandbox,
        "memory = \"16MiB\"\nconfig = { alloc-mb = 64 }",
        "out-of-memory",
    );
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("past its limit"),
        "{report:#}"
    );
}

#[test]
fn memory_within_the_limit_is_fine() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "m.toml",
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"{probe}\"\nmemory = \"64MiB\"\nconfig = { alloc-mb = 16, output = 1 }\n[[flow]]\nrun = \"a\"\nas = \"a\"\n",
    );
    let run = sandbox.run(&manifest, "{}");
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_trap_fails_its_step_with_the_guests_last_words() {
    let sandbox = Sandbox::new();
    let report = assert_step_failed(&sandbox, "config = { trap = true }", "trap");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("trap on purpose"), "{message}");
}

#[test]
fn output_that_is_not_json_fails_its_step() {
    let sandbox = Sandbox::new();
    let report = assert_step_failed(
        &sandbox,
        "config = { garbage-output = true }",
        "invalid-output",
    );
    assert!(report["error"]["permanent"].as_bool().unwrap());
}

#[test]
fn a_capability_that_was_not_granted_is_not_allowed_and_names_the_grant() {
    let sandbox = Sandbox::new();
    let report = assert_step_failed(
        &sandbox,
        "config = { emit = \"brand.created\" }",
        "not-allowed",
    );
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("step 'bad' is not granted emitting events"),
        "{message}"
    );
    assert!(
        message.contains("m.toml under [steps.bad] (line 9): grants = { events = true }"),
        "{message}"
    );
}

#[test]
fn a_granted_capability_works() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "m.toml",
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"{probe}\"\ngrants = { events = true }\nconfig = { emit = \"brand.created\", echo-input = true }\n[[flow]]\nrun = \"a\"\nas = \"a\"\n",
    );
    let run = sandbox.run(&manifest, r#"{"id": "b1"}"#);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.report();
    let emitted = json!([{"name": "brand.created", "data": {"id": "b1"}, "step": "a"}]);
    assert_eq!(report["events"], emitted);
    // Journaled with the run: the stored report has them too.
    let run_id = report["run"].as_str().unwrap();
    let shown = sandbox.host(&["runs", "show", run_id, "--json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let stored: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(stored["events"], emitted, "{stored:#}");
}

#[test]
fn a_chatty_guest_is_not_failed_by_its_output() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "m.toml",
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { print-kb = 200, output = 1 }\n[[flow]]\nrun = \"a\"\nas = \"a\"\n",
    );
    let run = sandbox.run(&manifest, "{}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("more bytes of output were dropped"),
        "the cap is reported"
    );
}

#[test]
fn a_looping_step_does_not_block_its_parallel_sibling() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "m.toml",
        r#"
[workflow]
name = "w"
[steps.spin]
component = "{probe}"
timeout = "1s"
config = { loop-forever = true }
[steps.quick]
component = "{probe}"
config = { output = "quick" }
[[flow]]
parallel = [{ run = "spin" }, { run = "quick" }]
"#,
    );
    let run = sandbox.run(&manifest, "{}");
    let report = run.report();
    let quick = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["step"] == "quick")
        .unwrap()
        .clone();
    assert_eq!(quick["outcome"], "ok");
    // The sibling finished long before the looping step's deadline.
    assert!(quick["duration_ms"].as_f64().unwrap() < 900.0, "{quick}");
    assert_eq!(report["status"], "reverted");
}

/// JSON the host could keep as text but never read (nested past the limit,
/// numbers out of range) is refused where it enters: a step's output fails
/// the step, a caller's input is a usage error, and the state file stays
/// usable for the next command (it used to panic every later `host run`).
#[test]
fn json_too_deep_or_out_of_range_is_refused_at_the_boundary() {
    let sandbox = Sandbox::new();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for raw in [deep.as_str(), "{\"n\": 1e400}"] {
        let options = format!("config = {{ raw-output = {raw:?} }}");
        let report = assert_step_failed(&sandbox, &options, "invalid-output");
        let message = report["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("nested deeper than 100 levels") || message.contains("out of range"),
            "{message}"
        );
    }
    let manifest = sandbox.manifest("ok.toml", &two_steps("config = { output = 1 }"));
    let next = sandbox.run(&manifest, "{}");
    assert_eq!(
        next.code, 0,
        "a later run on the same state file: {}",
        next.stderr
    );

    let input = sandbox.run(&manifest, &deep);
    assert_eq!(input.code, 2, "{}", input.stderr);
    assert!(
        input.stderr.contains("nested deeper than 100 levels"),
        "{}",
        input.stderr
    );
}

/// A guest that calls a method on a handle the host never handed out breaks
/// the contract: its step fails as a permanent `trap` (no retry; it was
/// reported as a transient `host` failure), with a message that names the
/// misuse and carries no host backtrace.
#[test]
fn a_forged_handle_is_the_guest_s_fault_and_not_retried() {
    let sandbox = Sandbox::new();
    let report = assert_step_failed(
        &sandbox,
        "retries = { max = 2, interval = \"1ms\" }\nconfig = { forge-handle = true }",
        "trap",
    );
    assert_eq!(report["error"]["permanent"], true, "{report:#}");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("it broke the contract: unknown handle index"),
        "{message}"
    );
    assert!(!message.contains("wasm backtrace"), "{message}");
}

/// What the host copies of a call's result is bounded: an output past 8 MiB
/// fails the step (it used to be kept, journaled and reported whole), and an
/// error message past 16 KiB is cut.
#[test]
fn a_huge_output_fails_and_a_huge_error_message_is_cut() {
    let sandbox = Sandbox::new();
    let report = assert_step_failed(&sandbox, "config = { big-kb = 9000 }", "invalid-output");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("more than the 8 MiB a call may return"),
        "{message}"
    );

    let report = assert_step_failed(
        &sandbox,
        "config = { big-kb = 1024, fail-always = true, permanent = true }",
        "unknown",
    );
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.len() < 17 << 10, "{} bytes", message.len());
    assert!(
        message.ends_with("(cut: 1048576 bytes in all)"),
        "{:.80}…",
        &message[message.len() - 60..]
    );
}

/// An expression that would be quadratic in a caller's input is refused
/// before it runs (CEL cannot be interrupted once it does): the run fails
/// with kind `expression` at once, and the step before it is compensated.
/// The same expression over a small input runs.
#[test]
fn an_expression_over_its_budget_fails_fast_and_compensates() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "quadratic.toml",
        r#"
[workflow]
name = "quadratic"

[steps.before]
component = "{probe}"
config = { output = { ok = true } }

[[flow]]
run = "before"

[[flow]]
transform = "input.xs.map(a, input.xs.map(b, a * b))"
as = "table"

[output]
value = "size(table)"
"#,
    );
    let small = sandbox.run(&manifest, r#"{"xs": [1, 2, 3]}"#);
    assert_eq!(small.code, 0, "{}", small.stderr);
    assert_eq!(small.report()["output"], 3);

    let xs: Vec<u32> = (0..20_000).collect();
    let started = Instant::now();
    let large = sandbox.run(&manifest, &json!({ "xs": xs }).to_string());
    assert_eq!(large.code, 1, "{}", large.stderr);
    let report = large.report();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(report["error"]["kind"], "expression", "{report:#}");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("over its budget"), "{message}");
    assert_eq!(large.calls(), ["invoke before", "compensate before"]);
    // 4·10⁸ multiplications would take minutes; refusing takes a parse.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn every_call_gets_a_fresh_memory_even_when_its_slot_is_reused() {
    // The engine resets a reused memory slot by rewriting the pages the
    // last call dirtied (and discarding the rest): no call may see what an
    // earlier one wrote, in its static data or in memory it grew. Freed
    // slots are handed out again once a batch of 16 regions is released
    // (3 per call of the probe), so 40 calls in one process reuse slots.
    let sandbox = Sandbox::new();
    let calls = 40;
    let mut manifest = String::from(
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { remember = true }\n",
    );
    for n in 0..calls {
        manifest.push_str(&format!("[[flow]]\nrun = \"a\"\nas = \"c{n}\"\n"));
    }
    let manifest = sandbox.manifest("m.toml", &manifest);
    let run = sandbox.run(&manifest, "{}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let output = &run.report()["output"];
    for n in 0..calls {
        assert_eq!(
            output[format!("c{n}")],
            json!({ "calls-before": 0, "dirty-pages": 0 }),
            "call {n}: {output:#}"
        );
    }
}
