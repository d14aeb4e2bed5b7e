//! Per-key concurrency through the real binary: 20 runs of 3 keys over two
//! `host serve` on one PostgreSQL database never run two of a key at once
//! and start in the order they came; a workflow-wide limit starts queued
//! runs by priority; a queued run is cancelled without running. Every wait
//! polls for a condition with a generous deadline.

mod common;

use std::path::PathBuf;

use common::Sandbox;
use common::server::Server;
use serde_json::{Value, json};
use wasaga_host::postgres::testing::TestSchema;

/// A folder with the workflow `payout`: `concurrency` (a TOML inline table),
/// one probe step that sleeps `sleep_ms` and echoes its input.
fn payout(sandbox: &Sandbox, concurrency: &str, sleep_ms: u32) -> PathBuf {
    std::fs::create_dir_all(sandbox.path("workflows")).unwrap();
    sandbox.manifest(
        "workflows/payout.toml",
        &format!(
            "[workflow]\nname = \"payout\"\nconcurrency = {concurrency}\n\
             [steps.pay]\ncomponent = \"{{probe}}\"\nconfig = {{ echo-input = true, sleep-ms = {sleep_ms} }}\n\
             [[flow]]\nrun = \"pay\"\nas = \"p\"\n[output]\nvalue = \"p\"\n"
        ),
    );
    sandbox.path("workflows")
}

/// Starts a run without waiting; returns its id and the status it was
/// accepted with.
fn start(server: &Server, input: Value) -> (String, String) {
    let (code, body, _) = server.post(
        "/workflows/payout/runs?wait=false",
        json!({ "input": input }),
    );
    assert_eq!(code, 202, "{body}");
    (
        body["run"].as_str().unwrap().to_string(),
        body["status"].as_str().unwrap().to_string(),
    )
}

/// When a finished run's step started and when the run finished (unix ms,
/// from the journal: the list's times and the trace's offsets).
fn span(server: &Server, run: &str) -> (f64, f64) {
    let report = server.wait_final(run);
    assert_eq!(report["status"], "done", "{report:#}");
    let (_, list) = server.get("/runs?workflow=payout&limit=500");
    let summary = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == run)
        .unwrap_or_else(|| panic!("{run} is not listed"))
        .clone();
    let created = summary["created_at"].as_f64().unwrap();
    let started = created + report["trace"][0]["started_ms"].as_f64().unwrap();
    (started, summary["finished_at"].as_f64().unwrap())
}

#[test]
fn twenty_runs_of_three_keys_on_two_hosts_run_one_per_key_at_a_time_in_order() {
    let sandbox = Sandbox::new();
    let dir = payout(&sandbox, "{ key = \"input.customer\", limit = 1 }", 150);
    let database = TestSchema::new();
    let env = [("WASAGA_STATE", database.url.as_str())];
    let hosts = [
        Server::start_with_env(&sandbox, &[&dir], &[], &env),
        Server::start_with_env(&sandbox, &[&dir], &[], &env),
    ];
    let mut runs: Vec<(String, String)> = Vec::new();
    let mut queued = 0;
    for i in 0..20 {
        let customer = format!("c{}", i % 3);
        let (run, status) = start(&hosts[i % 2], json!({ "customer": customer, "n": i }));
        if status == "queued" {
            queued += 1;
        }
        runs.push((customer, run));
    }
    assert!(queued > 0, "no run was queued");
    for key in ["c0", "c1", "c2"] {
        let spans: Vec<(f64, f64)> = runs
            .iter()
            .filter(|(customer, _)| customer == key)
            .map(|(_, run)| span(&hosts[0], run))
            .collect();
        for pair in spans.windows(2) {
            // In the order they came, and never two at once.
            assert!(
                pair[1].0 >= pair[0].1,
                "two runs of {key} overlapped, or started out of order: {spans:?}"
            );
        }
    }
}

#[test]
fn a_workflow_wide_limit_starts_queued_runs_by_priority_and_a_queued_run_cancels_without_running() {
    let sandbox = Sandbox::new();
    // Long enough for the posts and the cancel below to come while the
    // first run holds the slot, on a slow machine too.
    let dir = payout(
        &sandbox,
        "{ limit = 1, priority = \"input.priority\" }",
        1500,
    );
    let server = Server::start(&sandbox, &[&dir], &[]);
    let (first, status) = start(&server, json!({ "priority": 0 }));
    assert_eq!(status, "running");
    let mut later = Vec::new();
    for priority in [1, 5, 3] {
        let (run, status) = start(&server, json!({ "priority": priority }));
        assert_eq!(status, "queued", "the workflow's one slot is taken");
        later.push((priority, run));
    }
    let (doomed, status) = start(&server, json!({ "priority": 9 }));
    assert_eq!(status, "queued");
    let (code, cancelled, _) = server.post(&format!("/runs/{doomed}/cancel"), json!({}));
    assert_eq!(code, 422, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["trace"], json!([]), "nothing of it ran");

    let mut order: Vec<(f64, i64)> = vec![(span(&server, &first).0, 0)];
    for (priority, run) in &later {
        order.push((span(&server, run).0, *priority));
    }
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let priorities: Vec<i64> = order.iter().map(|(_, p)| *p).collect();
    assert_eq!(priorities, [0, 5, 3, 1], "{order:?}");
}
