//! Durable execution through the real binary: the host is killed at many
//! points of runs that succeed and runs that compensate, then resumed; the
//! entity rows written by the brand steps are the ground truth. Also
//! idempotent transaction ids (two processes), async and background steps,
//! cancellation, and the run history commands.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, brand_manifest};
use serde_json::{Value, json};

const SETUP_INPUT: &str = r#"{"brand": {"name": "Acme"}, "products": [{"title": "Anvil"}, {"title": "Rocket"}], "collections": [{"title": "Spring"}]}"#;
const FAILS_INPUT: &str =
    r#"{"brand": {"name": "Acme"}, "products": [{"title": "Anvil"}, {"title": "Rocket"}]}"#;

impl Sandbox {
    /// `host run` that dies at `crash` (WASAGA_CRASH_AT): returns its exit status code (None when killed).
    fn run_crashing(&self, manifest: &std::path::Path, input: &str, crash: &str) -> Option<i32> {
        let status = self
            .command()
            .args(["run", manifest.to_str().unwrap(), "--input", input, "-q"])
            .env("WASAGA_CRASH_AT", crash)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        status.code()
    }

    /// Every run in the journal: (id, status). None yet while the file has
    /// no tables: a host process creates the file, then its schema (a
    /// poll can come in between, and a SIGKILL can stop it there).
    fn runs(&self) -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(self.state()).unwrap();
        // Waits out the creating process's lock instead of failing "busy".
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut stmt = match conn.prepare("SELECT id, status FROM runs ORDER BY created_at") {
            Err(e) if e.to_string().contains("no such table") => return Vec::new(),
            stmt => stmt.unwrap(),
        };
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// How many times each (node, action) settled successfully in the journal.
    fn settled(&self, run: &str) -> HashMap<(String, String), usize> {
        let conn = rusqlite::Connection::open(self.state()).unwrap();
        let mut stmt = conn
            .prepare("SELECT node, action, body FROM records WHERE run = ?1 AND kind = 'finished'")
            .unwrap();
        let mut counts = HashMap::new();
        for row in stmt
            .query_map([run], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .unwrap()
        {
            let (node, action, body) = row.unwrap();
            let outcome: Value = serde_json::from_str(&body).unwrap();
            if outcome["outcome"] == "done" || outcome["outcome"] == "compensated" {
                *counts.entry((node, action)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The attempts that started for a node's action.
    fn attempts(&self, run: &str, node: &str, action: &str) -> Vec<u32> {
        let conn = rusqlite::Connection::open(self.state()).unwrap();
        let mut stmt = conn
            .prepare("SELECT attempt FROM records WHERE run = ?1 AND kind = 'started' AND node = ?2 AND action = ?3 ORDER BY seq")
            .unwrap();
        stmt.query_map([run, node, action], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

fn resume_all(sandbox: &Sandbox) {
    let resumed = sandbox.host(&["resume", "--all"]);
    assert_eq!(resumed.code, 0, "resume failed: {}", resumed.stderr);
}

fn assert_each_settled_once(sandbox: &Sandbox, run: &str) {
    for ((node, action), count) in sandbox.settled(run) {
        assert_eq!(count, 1, "{action} of {node} settled {count} times");
    }
}

#[test]
fn a_run_that_succeeds_survives_the_host_dying_at_any_transition() {
    let points = [
        "started:create-brand:invoke",
        "finished:create-brand:invoke",
        "started:create-products:invoke",
        "finished:create-products:invoke",
        "started:create-collections:invoke",
        "finished:create-collections:invoke",
    ];
    for point in points {
        let sandbox = Sandbox::new();
        let code = sandbox.run_crashing(&brand_manifest("setup-brand.toml"), SETUP_INPUT, point);
        assert_eq!(code, None, "{point}: the host was killed");
        let runs = sandbox.runs();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].1, "running", "{point}");
        resume_all(&sandbox);
        let (run, status) = sandbox.runs().remove(0);
        assert_eq!(status, "done", "{point}");
        // Ground truth: every entity exactly once (no step's work was done twice).
        assert_eq!(sandbox.rows("brand").len(), 1, "{point}");
        assert_eq!(sandbox.rows("product").len(), 2, "{point}");
        assert_eq!(sandbox.rows("collection").len(), 1, "{point}");
        assert_each_settled_once(&sandbox, &run);
        // The report of the run ties up with the rows.
        let shown = sandbox.host(&["runs", "show", &run, "--json"]);
        let report: Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(
            report["output"]["brand"]["id"],
            sandbox.rows("brand")[0].0,
            "{point}"
        );
    }
}

#[test]
fn a_step_in_flight_when_the_host_died_is_called_again_with_the_next_attempt() {
    let sandbox = Sandbox::new();
    sandbox.run_crashing(
        &brand_manifest("setup-brand.toml"),
        SETUP_INPUT,
        "started:create-brand:invoke",
    );
    resume_all(&sandbox);
    let (run, _) = sandbox.runs().remove(0);
    assert_eq!(sandbox.attempts(&run, "create-brand", "invoke"), [1, 2]);
    let shown = sandbox.host(&["runs", "show", &run, "--json"]);
    let report: Value = serde_json::from_str(&shown.stdout).unwrap();
    let brand_calls: Vec<u64> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == "create-brand")
        .map(|t| t["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(brand_calls, [2], "attempt 1 never finished; attempt 2 did");
}

fn stock_manifest(sandbox: &Sandbox, config: &str) -> std::path::PathBuf {
    sandbox.manifest(
        "stock.toml",
        &format!(
            "[workflow]\nname = \"stock\"\n[steps.stock]\ncomponent = \"{{probe}}\"\ngrants = {{ entities = [\"product\"] }}\nretries = {{ max = 1 }}\nconfig = {config}\n[[flow]]\nrun = \"stock\"\n"
        ),
    )
}

#[test]
fn a_step_called_again_after_a_crash_gets_back_the_entities_it_created() {
    let sandbox = Sandbox::new();
    let manifest = stock_manifest(
        &sandbox,
        "{ create = { in = \"product\", count = 3 }, sleep-ms = 1500 }",
    );
    let mut child = sandbox
        .command()
        .args(["run", manifest.to_str().unwrap(), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the host once the step has stored its entities, before it returns.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = || {
        rusqlite::Connection::open(sandbox.state())
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM entities WHERE collection = 'product'",
                    [],
                    |row| row.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
    };
    while stored() < 3 {
        assert!(
            Instant::now() < deadline,
            "the step never stored its entities"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    resume_all(&sandbox);
    let (run, status) = sandbox.runs().remove(0);
    assert_eq!(status, "done");
    assert_eq!(sandbox.attempts(&run, "stock", "invoke"), [1, 2]);
    assert_eq!(
        sandbox.rows("product").len(),
        3,
        "attempt 2 got attempt 1's entities back"
    );
}

#[test]
fn a_retried_step_gets_back_the_entities_its_failed_attempt_created() {
    let sandbox = Sandbox::new();
    let manifest = stock_manifest(
        &sandbox,
        "{ create = { in = \"product\", count = 2 }, fail-times = 1 }",
    );
    let finished = sandbox.run(&manifest, "{}");
    assert_eq!(finished.report()["status"], "done", "{}", finished.stderr);
    assert_eq!(sandbox.rows("product").len(), 2);
}

#[test]
fn a_run_that_compensates_survives_the_host_dying_at_any_transition() {
    let points = [
        "finished:create-products:invoke",
        "finished:validate-brand:invoke",
        "compensating",
        "started:validate-brand:compensate",
        "started:create-products:compensate",
        "finished:create-products:compensate",
        "started:create-brand:compensate",
    ];
    for point in points {
        let sandbox = Sandbox::new();
        let before = sandbox.run(
            &brand_manifest("create-brand.toml"),
            r#"{"name": "Existing"}"#,
        );
        assert_eq!(before.code, 0);
        let code = sandbox.run_crashing(
            &brand_manifest("create-brand-fails.toml"),
            FAILS_INPUT,
            point,
        );
        assert_eq!(code, None, "{point}: the host was killed");
        resume_all(&sandbox);
        let runs = sandbox.runs();
        let (run, status) = runs.last().unwrap().clone();
        assert_eq!(status, "reverted", "{point}");
        // Ground truth: the store is back to what it was before the run.
        let brands = sandbox.rows("brand");
        assert_eq!(brands.len(), 1, "{point}: {brands:?}");
        assert_eq!(brands[0].1["name"], "Existing");
        assert!(sandbox.rows("product").is_empty(), "{point}");
        assert_each_settled_once(&sandbox, &run);
        let compensated: Vec<String> = sandbox
            .settled(&run)
            .into_keys()
            .filter(|(_, action)| action == "compensate")
            .map(|(node, _)| node)
            .collect();
        assert_eq!(
            compensated.len(),
            3,
            "{point}: every compensation ran: {compensated:?}"
        );
    }
}

/// A workflow with sleeps between brand steps, so that a kill lands mid-run.
fn slow_manifest(sandbox: &Sandbox, fail: bool) -> std::path::PathBuf {
    let create_brand = common::component("create-brand").display().to_string();
    let create_products = common::component("create-products").display().to_string();
    let text = format!(
        r#"[workflow]
name = "slow-brand"

[steps.create-brand]
component = "{create_brand}"
grants = {{ entities = ["brand"] }}

[steps.pause]
component = "{{probe}}"
config = {{ sleep-ms = 150, echo-input = true }}

[steps.create-products]
component = "{create_products}"
grants = {{ entities = ["product"] }}

[steps.finish]
component = "{{probe}}"
config = {{ sleep-ms = 150, fail-always = {fail}, permanent = true, compensate-sleep-ms = 100 }}

[[flow]]
run = "create-brand"
input = "input.brand"
as = "brand"

[[flow]]
run = "pause"
input = "brand"

[[flow]]
run = "create-products"
input = "{{'brand_id': brand.id, 'items': input.products}}"

[[flow]]
run = "finish"
"#
    );
    sandbox.manifest("slow.toml", &text)
}

#[test]
fn sigkill_at_arbitrary_moments_loses_no_step_and_no_compensation() {
    for fail in [false, true] {
        for delay_ms in [40, 120, 220, 330, 420, 520] {
            let sandbox = Sandbox::new();
            let manifest = slow_manifest(&sandbox, fail);
            let mut child = sandbox
                .command()
                .args([
                    "run",
                    manifest.to_str().unwrap(),
                    "--input",
                    FAILS_INPUT,
                    "-q",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            if sandbox.state().exists() && !sandbox.runs().is_empty() {
                resume_all(&sandbox);
                let (run, status) = sandbox.runs().remove(0);
                let expected = if fail { "reverted" } else { "done" };
                assert_eq!(status, expected, "fail={fail} killed at {delay_ms}ms");
                assert_each_settled_once(&sandbox, &run);
            }
            let (brands, products) = (sandbox.rows("brand").len(), sandbox.rows("product").len());
            if fail || sandbox.runs().is_empty() {
                assert_eq!(
                    (brands, products),
                    (0, 0),
                    "fail={fail} killed at {delay_ms}ms"
                );
            } else {
                assert_eq!((brands, products), (1, 2), "killed at {delay_ms}ms");
            }
        }
    }
}

#[test]
fn a_transaction_id_that_already_ran_returns_the_recorded_result() {
    let sandbox = Sandbox::new();
    let manifest = brand_manifest("create-brand.toml");
    let args = |tx: &str| {
        vec![
            "run".to_string(),
            manifest.display().to_string(),
            "--input".into(),
            r#"{"name": "Acme"}"#.into(),
            "--transaction-id".into(),
            tx.into(),
        ]
    };
    let first = sandbox.host(
        &args("order-1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let second = sandbox.host(
        &args("order-1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(first.code, 0);
    assert_eq!(second.code, 0);
    assert_eq!(first.report()["run"], second.report()["run"]);
    assert_eq!(first.report()["output"], second.report()["output"]);
    assert!(second.stderr.contains("already ran"), "{}", second.stderr);
    assert_eq!(sandbox.rows("brand").len(), 1, "executed once");
    let third = sandbox.host(
        &args("order-2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_ne!(third.report()["run"], first.report()["run"]);
    assert_eq!(sandbox.rows("brand").len(), 2);
}

#[test]
fn two_processes_starting_one_transaction_execute_it_once() {
    let sandbox = Sandbox::new();
    let text = format!(
        "[workflow]\nname = \"once\"\n[steps.create-brand]\ncomponent = \"{}\"\ngrants = {{ entities = [\"brand\"] }}\n[steps.slow]\ncomponent = \"{{probe}}\"\nconfig = {{ sleep-ms = 400, output = 1 }}\n[[flow]]\nrun = \"create-brand\"\nas = \"brand\"\n[[flow]]\nrun = \"slow\"\n[output]\nvalue = \"brand\"\n",
        common::component("create-brand").display()
    );
    let manifest = sandbox.manifest("once.toml", &text);
    let spawn = || {
        sandbox
            .command()
            .args([
                "run",
                manifest.to_str().unwrap(),
                "--input",
                r#"{"name": "Acme"}"#,
                "--transaction-id",
                "tx-1",
                "--no-resume",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let report = |o: &std::process::Output| serde_json::from_slice::<Value>(&o.stdout).unwrap();
    assert_eq!(report(&a)["run"], report(&b)["run"]);
    assert_eq!(report(&a)["output"], report(&b)["output"]);
    assert_eq!(sandbox.rows("brand").len(), 1, "the workflow ran once");
    assert_eq!(sandbox.runs().len(), 1);
}

fn async_manifest(sandbox: &Sandbox, config: &str) -> std::path::PathBuf {
    let text = format!(
        "[workflow]\nname = \"approval\"\n[steps.request]\ncomponent = \"{{probe}}\"\nconfig = {{ output = {{ requested = true }} }}\n[steps.approve]\ncomponent = \"{{probe}}\"\nasync = true\nconfig = {{ output = {{ sent = true }} }}\n[steps.ship]\ncomponent = \"{{probe}}\"\nconfig = {config}\n[[flow]]\nrun = \"request\"\n[[flow]]\nrun = \"approve\"\nas = \"approval\"\n[[flow]]\nrun = \"ship\"\ninput = \"approval\"\nas = \"shipped\"\n[output]\nvalue = \"shipped\"\n"
    );
    sandbox.manifest("approval.toml", &text)
}

#[test]
fn an_async_step_waits_until_it_is_answered_and_the_run_pins_its_manifest() {
    let sandbox = Sandbox::new();
    let manifest = async_manifest(&sandbox, "{ echo-input = true, output = { version = 1 } }");
    let started = sandbox.run(&manifest, "{}");
    assert_eq!(started.code, 0, "{}", started.stderr);
    let report = started.report();
    assert_eq!(report["status"], "waiting");
    let run = report["run"].as_str().unwrap().to_string();
    assert_eq!(started.calls(), ["invoke request", "invoke approve"]);

    // Wrong step, wrong action: clear errors, nothing changed.
    let wrong = sandbox.host(&["step", "succeed", &run, "request", "--output", "{}"]);
    assert_eq!(wrong.code, 2);
    assert!(
        wrong.stderr.contains("step 'request' of run") && wrong.stderr.contains("waiting: approve"),
        "{}",
        wrong.stderr
    );
    let unknown = sandbox.host(&["step", "succeed", &run, "nope"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("has no step 'nope'"),
        "{}",
        unknown.stderr
    );
    assert_eq!(sandbox.runs()[0].1, "waiting");

    // Editing the manifest does not change the run in flight.
    async_manifest(&sandbox, "{ echo-input = true, output = { version = 2 } }");
    let answered = sandbox.host(&[
        "step",
        "succeed",
        &run,
        "approve",
        "--output",
        r#"{"approved_by": "ada"}"#,
    ]);
    assert_eq!(answered.code, 0, "{}", answered.stderr);
    let report = answered.report();
    assert_eq!(report["status"], "done");
    assert_eq!(
        report["output"],
        json!({"version": 1, "approved_by": "ada"})
    );
    // One trace entry per attempt: the answer completes the waiting
    // invoke's entry (it used to add a second one, input null, 0 ms).
    let approvals: Vec<&Value> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == "approve" && t["action"] == "invoke")
        .collect();
    assert_eq!(approvals.len(), 1, "{:#}", report["trace"]);
    assert_eq!(approvals[0]["attempt"], 1);
    assert_eq!(approvals[0]["outcome"], "ok");
    assert!(!approvals[0]["input"].is_null(), "{}", approvals[0]);
    let shown = sandbox.host(&["runs", "show", &run, "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["trace"], report["trace"]);
    let again = sandbox.host(&["step", "succeed", &run, "approve"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("is done"), "{}", again.stderr);
}

#[test]
fn a_failed_async_step_reverts_the_run() {
    let sandbox = Sandbox::new();
    let manifest = async_manifest(&sandbox, "{}");
    let run = sandbox.run(&manifest, "{}").report()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = sandbox.host(&[
        "step",
        "fail",
        &run,
        "approve",
        "--error",
        r#"{"kind": "forbidden", "message": "rejected by ada"}"#,
    ]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let report = failed.report();
    assert_eq!(report["status"], "reverted");
    assert_eq!(report["error"]["kind"], "forbidden");
    let calls = common::calls_of(&report);
    assert_eq!(
        calls,
        [
            "invoke request",
            "invoke approve",
            "compensate approve",
            "compensate request"
        ]
    );
    // The answer is the waiting attempt's outcome (one entry, not two).
    let approve = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["step"] == "approve" && t["action"] == "invoke")
        .unwrap();
    assert_eq!(approve["outcome"], "error");
    assert_eq!(approve["error"]["message"], "rejected by ada");
}

#[test]
fn a_background_step_returns_at_once_and_a_resume_finishes_the_run() {
    let sandbox = Sandbox::new();
    let text = "[workflow]\nname = \"bg\"\n[steps.quick]\ncomponent = \"{probe}\"\nconfig = { output = 1 }\n[steps.report]\ncomponent = \"{probe}\"\nbackground = true\nconfig = { sleep-ms = 100, output = \"report ready\" }\n[[flow]]\nrun = \"quick\"\n[[flow]]\nrun = \"report\"\nas = \"r\"\n[output]\nvalue = \"r\"\n";
    let manifest = sandbox.manifest("bg.toml", text);
    let started = Instant::now();
    let run = sandbox.run(&manifest, "{}");
    assert_eq!(run.code, 0);
    assert_eq!(run.report()["status"], "running");
    assert_eq!(run.calls(), ["invoke quick"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    let resumed = sandbox.host(&["resume", "--all"]);
    let report: Value = serde_json::from_str(resumed.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["status"], "done");
    assert_eq!(report["output"], "report ready");
}

#[test]
fn cancel_compensates_a_finished_run_and_refuses_a_reverted_one() {
    let sandbox = Sandbox::new();
    let done = sandbox.run(&brand_manifest("setup-brand.toml"), SETUP_INPUT);
    let run = done.report()["run"].as_str().unwrap().to_string();
    assert_eq!(sandbox.rows("product").len(), 2);
    let cancelled = sandbox.host(&["cancel", &run]);
    assert_eq!(cancelled.code, 1, "{}", cancelled.stderr);
    assert_eq!(cancelled.report()["status"], "cancelled");
    assert!(
        sandbox.rows("brand").is_empty()
            && sandbox.rows("product").is_empty()
            && sandbox.rows("collection").is_empty()
    );
    let again = sandbox.host(&["cancel", &run]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already cancelled"),
        "{}",
        again.stderr
    );
    let unknown = sandbox.host(&["cancel", "nope"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no run 'nope'"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn cancel_refuses_a_failed_run_with_the_reason() {
    let sandbox = Sandbox::new();
    let text = "[workflow]\nname = \"f\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { output = 1, compensate-fail-always = true }\n[steps.b]\ncomponent = \"{probe}\"\nconfig = { fail-always = true, permanent = true }\n[[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"b\"\n";
    let manifest = sandbox.manifest("f.toml", text);
    let run = sandbox.run(&manifest, "{}").report();
    assert_eq!(run["status"], "failed");
    let refused = sandbox.host(&["cancel", run["run"].as_str().unwrap()]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("a compensation already failed"),
        "{}",
        refused.stderr
    );
}

#[test]
fn runs_list_show_and_prune() {
    let sandbox = Sandbox::new();
    sandbox.run(&brand_manifest("create-brand.toml"), r#"{"name": "Acme"}"#);
    sandbox.run(&brand_manifest("create-brand.toml"), r#"{"name": "A"}"#);
    let listed = sandbox.host(&["runs", "list", "--json"]);
    let lines: Vec<Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], "reverted", "newest first");
    let done = sandbox.host(&["runs", "list", "--status", "done", "--json"]);
    assert_eq!(done.stdout.lines().count(), 1);
    let table = sandbox.host(&["runs", "list"]);
    assert!(table.stdout.starts_with("RUN"), "{}", table.stdout);
    let bad = sandbox.host(&["runs", "list", "--status", "finished"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("'finished' is not a status"),
        "{}",
        bad.stderr
    );
    let id = lines[0]["run"].as_str().unwrap();
    let shown = sandbox.host(&["runs", "show", id, "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&shown.stdout).unwrap()["error"]["kind"],
        "invalid-data"
    );
    let pruned = sandbox.host(&["runs", "prune", "--older-than", "0s"]);
    assert!(pruned.stdout.contains("pruned 2"), "{}", pruned.stdout);
    assert!(sandbox.host(&["runs", "list", "--json"]).stdout.is_empty());
}

#[test]
fn the_timeline_shows_every_attempt_on_a_terminal() {
    let sandbox = Sandbox::new();
    let run = sandbox
        .run(&brand_manifest("create-brand-fails.toml"), FAILS_INPUT)
        .report();
    let id = run["run"].as_str().unwrap();
    // `script` gives the command a terminal.
    let output = Command::new("script")
        .args([
            "-qc",
            &format!(
                "{} runs show {id} --state {}",
                env!("CARGO_BIN_EXE_host"),
                sandbox.state().display()
            ),
            "/dev/null",
        ])
        .output();
    let Ok(output) = output else { return };
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("reverted"), "{text}");
    assert!(text.contains("compensate create-brand"), "{text}");
    assert!(
        text.contains("invalid-data: brand name 'Acme' is too short"),
        "{text}"
    );
}

#[test]
fn retention_prunes_finished_runs_of_the_workflow() {
    let sandbox = Sandbox::new();
    let text = "[workflow]\nname = \"short-lived\"\nretention = \"1ms\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { output = 1 }\n[[flow]]\nrun = \"a\"\n";
    let manifest = sandbox.manifest("r.toml", text);
    let first = sandbox.run(&manifest, "{}").report();
    std::thread::sleep(Duration::from_millis(20));
    let second = sandbox.run(&manifest, "{}").report();
    let ids: Vec<String> = sandbox.runs().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        [second["run"].as_str().unwrap()],
        "the first run ({}) was pruned",
        first["run"]
    );
}

#[test]
fn cancelling_a_run_in_flight_in_another_process_stops_it_and_compensates() {
    let sandbox = Sandbox::new();
    let text = "[workflow]\nname = \"long\"\n[steps.a]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 250, output = 1 }\n[steps.b]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 250, output = 2 }\n[steps.c]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 250, output = 3 }\n[[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"b\"\n[[flow]]\nrun = \"c\"\n";
    let manifest = sandbox.manifest("long.toml", text);
    let runner = sandbox
        .command()
        .args(["run", manifest.to_str().unwrap(), "-q", "--compact"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        if let Some((id, _)) = sandbox
            .state()
            .exists()
            .then(|| sandbox.runs().into_iter().next())
            .flatten()
        {
            break id;
        }
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    let cancelled = sandbox.host(&["cancel", &run]);
    assert_eq!(
        cancelled.report()["status"],
        "cancelled",
        "{}",
        cancelled.stderr
    );
    let output = runner.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"], "cancelled");
    assert_eq!(report["error"]["kind"], "cancelled");
    let calls = common::calls_of(&report);
    assert!(
        !calls.contains(&"invoke c".to_string()),
        "no new step after the cancel: {calls:?}"
    );
    assert!(calls.contains(&"compensate a".to_string()), "{calls:?}");
}

/// A run pins its components' content: a `.wasm` rebuilt between a SIGKILL
/// and the resume is refused (naming the step and both hashes) until the
/// operator accepts it, which the run's history then records.
#[test]
fn a_resume_refuses_a_component_rebuilt_since_the_run_started() {
    let sandbox = Sandbox::new();
    let step = sandbox.path("step.wasm");
    std::fs::copy(common::component("probe"), &step).unwrap();
    let manifest = sandbox.manifest(
        "pinned.toml",
        &format!(
            "[workflow]\nname = \"pinned\"\n[steps.first]\ncomponent = \"{0}\"\n[steps.second]\ncomponent = \"{0}\"\n[[flow]]\nrun = \"first\"\n[[flow]]\nrun = \"second\"\n",
            step.display()
        ),
    );
    assert_eq!(
        sandbox.run_crashing(&manifest, "{}", "finished:first:invoke"),
        None,
        "killed after the first step"
    );
    let (run, status) = sandbox.runs().pop().unwrap();
    assert_eq!(status, "running");
    // The same code, other bytes: a custom section appended, as a rebuild
    // with another toolchain would differ.
    let mut bytes = std::fs::read(&step).unwrap();
    bytes.extend_from_slice(&[0x00, 0x06, 0x04, b't', b'e', b's', b't', b'x']);
    std::fs::write(&step, &bytes).unwrap();
    let refused = sandbox.host(&["resume", "--all"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("started with other code")
            && refused.stderr.contains("step 'first'")
            && refused.stderr.contains("step 'second'")
            && refused.stderr.contains("--accept-changed-components"),
        "{}",
        refused.stderr
    );
    let now = blake3_hex(&bytes);
    assert!(refused.stderr.contains(&now), "{}", refused.stderr);
    assert_eq!(sandbox.runs().pop().unwrap().1, "running", "nothing ran");
    let accepted = sandbox.host(&["resume", "--all", "--accept-changed-components"]);
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert_eq!(sandbox.runs().pop().unwrap().1, "done");
    let shown = sandbox.host(&["runs", "show", &run, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let accepted_event = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "run.components-accepted")
        .unwrap_or_else(|| panic!("the acceptance is in the history: {report:#}"));
    assert_eq!(accepted_event["data"]["components"][0]["now"], now);
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
