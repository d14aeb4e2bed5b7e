//! `GET /metrics` of a real `host serve`, parsed as Prometheus' text format:
//! runs started and finished by workflow and status, calls by outcome with
//! their durations, and the unfinished runs counted from the journal.

mod common;

use std::collections::HashMap;

use common::Sandbox;
use common::server::{Server, probe_dir};
use serde_json::json;

/// Every sample line: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            (
                key.to_string(),
                value.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            )
        })
        .collect()
}

fn scrape(server: &Server) -> (HashMap<String, f64>, String) {
    let mut response = server
        .agent()
        .get(&format!("{}/metrics", server.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.body_mut().read_to_string().unwrap();
    (samples(&text), text)
}

#[test]
fn metrics_count_runs_calls_and_the_unfinished_runs() {
    let sandbox = Sandbox::new();
    let dir = probe_dir(&sandbox);
    let server = Server::start(&sandbox, &[&dir], &[]);
    for name in ["ab", "cd"] {
        let (code, report, _) =
            server.post("/workflows/greet/runs", json!({"input": {"name": name}}));
        assert_eq!(code, 200, "{report}");
    }
    let (code, _, _) = server.post("/workflows/compensates/runs", json!({}));
    assert_eq!(code, 422);
    let (code, waiting, _) = server.post("/workflows/approval/runs", json!({}));
    assert_eq!(code, 202, "{waiting}");

    let (metrics, text) = scrape(&server);
    let get = |key: &str| {
        metrics
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
    };
    assert_eq!(get("wasaga_runs_started_total{workflow=\"greet\"}"), 2.0);
    assert_eq!(
        get("wasaga_runs_finished_total{workflow=\"greet\",status=\"done\"}"),
        2.0
    );
    assert_eq!(
        get("wasaga_runs_finished_total{workflow=\"compensates\",status=\"reverted\"}"),
        1.0
    );
    assert_eq!(
        get("wasaga_calls_total{call=\"hello\",action=\"invoke\",outcome=\"ok\"}"),
        2.0
    );
    // charge: two attempts (retries = { max = 1 }), both failed.
    assert_eq!(
        get("wasaga_calls_total{call=\"charge\",action=\"invoke\",outcome=\"error\"}"),
        2.0
    );
    assert_eq!(
        get("wasaga_calls_total{call=\"reserve\",action=\"compensate\",outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        get("wasaga_calls_total{call=\"ask\",action=\"invoke\",outcome=\"waiting\"}"),
        1.0
    );
    let invokes = get("wasaga_call_duration_seconds_count{action=\"invoke\"}");
    assert!(invokes >= 5.0, "{text}");
    assert_eq!(
        get("wasaga_call_duration_seconds_bucket{action=\"invoke\",le=\"+Inf\"}"),
        invokes
    );
    // reserve and charge sleep 40 ms each: not all in the first bucket.
    assert!(get("wasaga_call_duration_seconds_bucket{action=\"invoke\",le=\"0.001\"}") < invokes);
    assert!(
        get("wasaga_call_duration_seconds_sum{action=\"invoke\"}") >= 0.12,
        "{text}"
    );
    assert_eq!(get("wasaga_runs{status=\"waiting\"}"), 1.0);
    assert_eq!(get("wasaga_runs{status=\"running\"}"), 0.0);
    assert_eq!(get("wasaga_lease_takeovers_total"), 0.0);
    // Four runs started one at a time on the state file: each committed
    // its creation at least.
    let commits = get("wasaga_state_commits_total");
    assert!(commits >= 4.0, "{text}");
    // A few runs never take the log to its hold line.
    assert_eq!(get("wasaga_state_log_holds_total"), 0.0);
    assert_eq!(get("wasaga_state_log_hold_seconds_total"), 0.0);

    // A paused run is forgotten by the counters until it ends (so waiting
    // runs cost them nothing); answered, it is counted under its workflow,
    // read back from the journal.
    let run = waiting["run"].as_str().unwrap();
    let (code, report, _) = server.post(
        &format!("/runs/{run}/steps/ask/success"),
        json!({"output": 2}),
    );
    assert_eq!(code, 200, "{report}");
    let (metrics, text) = scrape(&server);
    assert_eq!(
        metrics.get("wasaga_runs_finished_total{workflow=\"approval\",status=\"done\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        metrics.get("wasaga_runs{status=\"waiting\"}"),
        Some(&0.0),
        "{text}"
    );
    // The answer and the run's end were committed.
    assert!(metrics["wasaga_state_commits_total"] > commits, "{text}");
}
