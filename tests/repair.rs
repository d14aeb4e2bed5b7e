//! Repairing a failed saga through the real binary: `host runs retry` (and
//! `POST /runs/{id}/retry`) calls again exactly the compensations that
//! failed, in the same reverse order, and ends the run `reverted`, or
//! `failed` again with the new errors; any other status is refused with
//! the reason; `host runs rerun` starts a new run linked to the original.
//! The "cause" the operator fixes is the probe's
//! `compensate-fail-times`: its compensation fails while its attempt is at
//! most N.

mod common;

use common::Sandbox;
use common::server::Server;
use serde_json::{Value, json};

/// `a` and `b` (whose compensations fail `fails` times), then `c`, which
/// fails and reverts the saga.
fn manifest(sandbox: &Sandbox, dir: &str, fails: u32) -> std::path::PathBuf {
    std::fs::create_dir_all(sandbox.path(dir)).unwrap();
    sandbox.manifest(
        &format!("{dir}/repair.toml"),
        &format!(
            "[workflow]\nname = \"repair\"\n\
             [steps.a]\ncomponent = \"{{probe}}\"\nconfig = {{ output = {{ a = 1 }}, compensate-fail-times = {fails} }}\n\
             [steps.b]\ncomponent = \"{{probe}}\"\nconfig = {{ output = {{ b = 2 }}, compensate-fail-times = {fails} }}\n\
             [steps.c]\ncomponent = \"{{probe}}\"\nconfig = {{ fail-always = true, permanent = true, error-message = \"out of stock\" }}\n\
             [[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"b\"\n[[flow]]\nrun = \"c\"\n"
        ),
    )
}

/// The compensations of a report, as `step #attempt outcome`, in order.
fn compensations(report: &Value) -> Vec<String> {
    report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["action"] == "compensate")
        .map(|t| {
            format!(
                "{} #{} {}",
                t["step"].as_str().unwrap(),
                t["attempt"],
                t["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn retry_calls_again_exactly_the_failed_compensations_in_reverse_order_and_reverts_the_run() {
    let sandbox = Sandbox::new();
    let manifest = manifest(&sandbox, "flows", 1);
    let failed = sandbox.run(&manifest, "{}");
    assert_eq!(failed.code, 1);
    let report = failed.report();
    assert_eq!(report["status"], "failed", "{report:#}");
    let run = report["run"].as_str().unwrap().to_string();
    let failures: Vec<&str> = report["error"]["compensation_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["step"].as_str().unwrap())
        .collect();
    assert_eq!(failures, ["b", "a"]);

    let retried = sandbox.host(&["runs", "retry", &run]);
    assert_eq!(retried.code, 1, "reverted is exit 1: {}", retried.stderr);
    let report = retried.report();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(report["error"]["message"], "out of stock");
    assert!(
        report["error"].get("compensation_failures").is_none(),
        "{report:#}"
    );
    assert_eq!(
        compensations(&report),
        ["c #1 ok", "b #1 error", "a #1 error", "b #2 ok", "a #2 ok"]
    );
    // No invoke ran again.
    let invokes = common::calls_of(&report)
        .into_iter()
        .filter(|c| c.starts_with("invoke"))
        .count();
    assert_eq!(invokes, 3);
    // The journal says what was retried.
    let shown = sandbox.host(&["runs", "show", &run, "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "reverted");

    // Now reverted: refused with the reason, nothing changed.
    let again = sandbox.host(&["runs", "retry", &run]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("is reverted: only a failed run")
            && again.stderr.contains("already succeeded"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_retry_that_fails_again_leaves_the_run_failed_with_the_new_errors_and_a_later_one_over_http_reverts_it()
 {
    let sandbox = Sandbox::new();
    let manifest = manifest(&sandbox, "workflows", 2);
    let run = sandbox.run(&manifest, "{}").report()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let second = sandbox.host(&["runs", "retry", &run]);
    let report = second.report();
    assert_eq!(report["status"], "failed", "{report:#}");
    let attempts: Vec<String> = report["error"]["compensation_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(attempts, ["b", "a"]);
    assert_eq!(compensations(&report)[3..], ["b #2 error", "a #2 error"]);

    let server = Server::start(&sandbox, &[&sandbox.path("workflows")], &[]);
    let (code, report, _) = server.post(&format!("/runs/{run}/retry"), json!({}));
    assert_eq!(code, 422, "{report:#}");
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(compensations(&report)[5..], ["b #3 ok", "a #3 ok"]);
    let (code, refused, _) = server.post(&format!("/runs/{run}/retry"), json!({}));
    assert_eq!(code, 409, "{refused}");
    let (code, _, _) = server.post("/runs/no-such-run/retry", json!({}));
    assert_eq!(code, 404);
}

#[test]
fn retry_refuses_a_run_that_did_not_fail() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "ok.toml",
        "[workflow]\nname = \"ok\"\n[steps.a]\ncomponent = \"{probe}\"\n[[flow]]\nrun = \"a\"\n",
    );
    let run = sandbox.run(&manifest, "{}").report()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = sandbox.host(&["runs", "retry", &run]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("is done: only a failed run")
            && refused.stderr.contains("`host cancel`"),
        "{}",
        refused.stderr
    );
}

#[test]
fn rerun_starts_a_new_run_linked_to_the_original_with_its_input_or_another() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "echo.toml",
        "[workflow]\nname = \"echo\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { echo-input = true }\n[[flow]]\nrun = \"a\"\nas = \"a\"\n[output]\nvalue = \"a\"\n",
    );
    let original = sandbox.run(&manifest, r#"{"order": 7}"#).report();
    let run = original["run"].as_str().unwrap().to_string();

    let same = sandbox.host(&["runs", "rerun", &run]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    let same = same.report();
    assert_ne!(same["run"], original["run"]);
    assert_eq!(same["rerun_of"], run.as_str());
    assert_eq!(same["output"], json!({"order": 7}));

    let other = sandbox.host(&["runs", "rerun", &run, "--input", r#"{"order": 8}"#]);
    let other = other.report();
    assert_eq!(other["output"], json!({"order": 8}));
    assert_eq!(other["rerun_of"], run.as_str());

    // The original lists its reruns, oldest first; a rerun lists none.
    let shown = sandbox.host(&["runs", "show", &run, "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["reruns"], json!([same["run"], other["run"]]));
    assert!(shown.get("rerun_of").is_none());

    let bad = sandbox.host(&["runs", "rerun", &run, "--input", "{order"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("--input is not valid JSON"),
        "{}",
        bad.stderr
    );
    let unknown = sandbox.host(&["runs", "rerun", "no-such-run"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no run 'no-such-run'"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn rerun_over_http_starts_a_linked_run_and_refuses_bad_bodies() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("workflows")).unwrap();
    sandbox.manifest(
        "workflows/echo.toml",
        "[workflow]\nname = \"echo\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { echo-input = true }\n[[flow]]\nrun = \"a\"\nas = \"a\"\n[output]\nvalue = \"a\"\n",
    );
    let server = Server::start(&sandbox, &[&sandbox.path("workflows")], &[]);
    let (code, original, _) =
        server.post("/workflows/echo/runs", json!({ "input": { "order": 7 } }));
    assert_eq!(code, 200, "{original}");
    let run = original["run"].as_str().unwrap();

    let (code, same, _) = server.post(&format!("/runs/{run}/rerun"), json!({}));
    assert_eq!(code, 200, "{same}");
    assert_eq!(same["rerun_of"], run);
    assert_eq!(same["output"], json!({"order": 7}));
    let (code, other, _) = server.post(
        &format!("/runs/{run}/rerun"),
        json!({ "input": { "order": 8 } }),
    );
    assert_eq!(code, 200, "{other}");
    assert_eq!(other["output"], json!({"order": 8}));
    let (_, shown) = server.get(&format!("/runs/{run}"));
    assert_eq!(shown["reruns"], json!([same["run"], other["run"]]));

    let (code, refused, _) = server.post(&format!("/runs/{run}/rerun"), json!({ "inputs": 1 }));
    assert_eq!(code, 400, "{refused}");
    let (code, _, _) = server.post("/runs/no-such-run/rerun", json!({}));
    assert_eq!(code, 404);
}

#[test]
fn a_run_whose_host_dies_at_the_same_step_again_and_again_is_parked_and_retry_continues_it() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "crashes.toml",
        "[workflow]\nname = \"crashes\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { output = 1 }\n[steps.b]\ncomponent = \"{probe}\"\nconfig = { output = 2 }\n[[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"b\"\nas = \"b\"\n[output]\nvalue = \"b\"\n",
    );
    // Every process that reaches b's start dies there (as if b crashed it).
    let dies = |args: &[&str]| {
        let status = sandbox
            .command()
            .args(args)
            .env("WASAGA_CRASH_AT", "started:b")
            .env("WASAGA_DEAD_LETTER_AFTER", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{args:?} should have died");
    };
    dies(&["run", manifest.to_str().unwrap(), "--input", "{}"]);
    dies(&["resume", "--all"]);
    dies(&["resume", "--all"]);
    // The third take-over parks it instead of dying a fourth time.
    let parked = sandbox
        .command()
        .args(["resume", "--all"])
        .env("WASAGA_CRASH_AT", "started:b")
        .env("WASAGA_DEAD_LETTER_AFTER", "3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&parked.stdout);
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["error"]["kind"], "host");
    assert_eq!(report["error"]["step"], "b");
    let message = report["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3 times while executing it, the last time at 'b'"),
        "{message}"
    );
    assert!(message.contains("host runs retry"), "{message}");
    // Parked: a resume leaves it alone.
    let resumed = sandbox.host(&["resume", "--all"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stdout.trim().is_empty(), "{}", resumed.stdout);

    // The cause is gone: retry continues it where it stopped (a is not called again).
    let run = report["run"].as_str().unwrap();
    let retried = sandbox.host(&["runs", "retry", run]);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    let report = retried.report();
    assert_eq!(report["status"], "done", "{report:#}");
    assert_eq!(report["output"], 2);
    let invokes_of_a = common::calls_of(&report)
        .iter()
        .filter(|c| *c == "invoke a")
        .count();
    assert_eq!(invokes_of_a, 1);
}
