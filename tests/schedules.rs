//! Schedules through the real binary: two `host serve` on one PostgreSQL
//! database start exactly one run per tick; a schedule whose every host was
//! down starts one catch-up run, not one per missed tick; `overlap = "skip"`
//! drops the ticks that come while a run is unfinished, `"queue"` holds one
//! until it ends, and neither runs two at once. Schedules with seconds (`*/2 * * * * *`)
//! keep the waits short; every wait polls for a condition with a generous
//! deadline, and the assertions hold however late a poll comes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::server::Server;
use common::{Sandbox, now_ms, unix_ms};
use serde_json::Value;
use wasaga_host::postgres::testing::TestSchema;

/// A folder with the workflow `tick`: `schedule` (the TOML inline table),
/// then one probe step that echoes its input, or `flow` instead.
fn scheduled(sandbox: &Sandbox, schedule: &str, flow: &str) -> PathBuf {
    std::fs::create_dir_all(sandbox.path("workflows")).unwrap();
    sandbox.manifest(
        "workflows/tick.toml",
        &format!(
            "[workflow]\nname = \"tick\"\nschedule = {schedule}\n\
             [steps.report]\ncomponent = \"{{probe}}\"\nconfig = {{ echo-input = true }}\n{flow}"
        ),
    );
    sandbox.path("workflows")
}

const ECHO: &str = "[[flow]]\nrun = \"report\"\nas = \"r\"\n[output]\nvalue = \"r\"\n";

/// The scheduled runs of `tick` the server lists, oldest tick first.
fn ticks(server: &Server) -> Vec<Value> {
    let (code, list) = server.get("/runs?workflow=tick&limit=500");
    assert_eq!(code, 200, "{list}");
    let mut runs: Vec<Value> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["tick"].is_string())
        .cloned()
        .collect();
    runs.sort_by_key(|run| unix_ms(run["tick"].as_str().unwrap()));
    runs
}

/// Polls until `done(runs)` holds for the scheduled runs.
fn wait_for(server: &Server, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = ticks(server);
        if done(&runs) {
            return runs;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {runs:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finished(runs: &[Value]) -> usize {
    runs.iter().filter(|run| run["status"] == "done").count()
}

fn start_on(sandbox: &Sandbox, dir: &Path, state: &str) -> Server {
    Server::start_with_env(sandbox, &[dir], &[], &[("WASAGA_STATE", state)])
}

#[test]
fn two_hosts_on_postgresql_start_exactly_one_run_per_tick() {
    let sandbox = Sandbox::new();
    let dir = scheduled(
        &sandbox,
        "{ cron = \"*/2 * * * * *\", input = { job = \"sync\" } }",
        ECHO,
    );
    let database = TestSchema::new();
    let first = start_on(&sandbox, &dir, &database.url);
    let second = start_on(&sandbox, &dir, &database.url);
    let runs = wait_for(&first, "four finished scheduled runs", |runs| {
        finished(runs) >= 4
    });
    let run = runs.iter().find(|run| run["status"] == "done").unwrap();
    let (_, report) = second.get(&format!("/runs/{}", run["run"].as_str().unwrap()));
    drop(first);
    drop(second);
    let mut seen = std::collections::HashSet::new();
    for run in &runs {
        let tick = run["tick"].as_str().unwrap();
        assert!(
            seen.insert(tick.to_string()),
            "tick {tick} started twice: {runs:#?}"
        );
        let at = unix_ms(tick);
        assert_eq!(at % 2000, 0, "not a tick of */2 seconds: {tick}");
        // The tick is in the transaction id: that is what makes it one run.
        assert_eq!(run["transaction_id"], format!("schedule:{tick}"));
        let created = run["created_at"].as_i64().unwrap();
        assert!(created >= at, "started before its tick: {created} < {at}");
    }
    assert_eq!(report["output"]["job"], "sync", "{report:#}");
    assert_eq!(report["tick"], run["tick"], "{report:#}");
}

#[test]
fn missed_ticks_while_no_host_ran_give_one_catch_up_run() {
    let sandbox = Sandbox::new();
    let dir = scheduled(&sandbox, "{ cron = \"* * * * * *\" }", ECHO);
    let state = sandbox.state().display().to_string();
    let server = start_on(&sandbox, &dir, &state);
    wait_for(&server, "a finished scheduled run", |runs| {
        finished(runs) >= 1
    });
    server.stop();
    let stopped = now_ms();
    // Every host is down for several ticks (how many does not matter: at
    // least two are missed).
    let before = ticks_in_file(&sandbox, &state);
    while now_ms() < stopped + 3_500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarted = now_ms();
    let server = start_on(&sandbox, &dir, &state);
    let runs = wait_for(&server, "a run after the restart", |runs| {
        runs.len() > before.len() && finished(runs) == runs.len()
    });
    drop(server);
    let last_before = before
        .iter()
        .map(|run| unix_ms(run["tick"].as_str().unwrap()))
        .max()
        .unwrap();
    let first_after = runs
        .iter()
        .map(|run| unix_ms(run["tick"].as_str().unwrap()))
        .filter(|tick| *tick > last_before)
        .min()
        .unwrap();
    // The ticks while down (at least two before the restart's second) gave
    // no run each: the first run after them is for the latest (or, if the
    // server's first look came in the second after its start, the next).
    assert!(
        first_after >= restarted - 1_000,
        "a run for a tick missed while down that was not the latest: {first_after} (stopped at {stopped}, restarted at {restarted}): {runs:#?}"
    );
}

/// The scheduled runs a state file holds, read with `host runs list`
/// (no server runs to start more meanwhile).
fn ticks_in_file(sandbox: &Sandbox, state: &str) -> Vec<Value> {
    let out = sandbox
        .command()
        .env("WASAGA_STATE", state)
        .args([
            "runs",
            "list",
            "--workflow",
            "tick",
            "--json",
            "--limit",
            "500",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|run| run["tick"].is_string())
        .collect()
}

/// `tick` every second, each run sleeping 2.5 s (durably, waiting), under
/// `overlap`: the finished runs' (tick, started, finished), in tick order.
fn overlapping(overlap: &str) -> Vec<(i64, i64, i64)> {
    let sandbox = Sandbox::new();
    let dir = scheduled(
        &sandbox,
        &format!("{{ cron = \"* * * * * *\", overlap = \"{overlap}\" }}"),
        "[[flow]]\nsleep = \"2500ms\"\n[[flow]]\nrun = \"report\"\n",
    );
    let state = sandbox.state().display().to_string();
    let server = start_on(&sandbox, &dir, &state);
    let runs = wait_for(&server, "three finished scheduled runs", |runs| {
        finished(runs) >= 3
    });
    drop(server);
    runs.iter()
        .filter(|run| run["status"] == "done")
        .map(|run| {
            (
                unix_ms(run["tick"].as_str().unwrap()),
                run["created_at"].as_i64().unwrap(),
                run["finished_at"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn overlap_skip_drops_the_ticks_that_come_while_a_run_is_unfinished() {
    let runs = overlapping("skip");
    for pair in runs.windows(2) {
        let ((_, _, finished), (tick, started, _)) = (pair[0], pair[1]);
        assert!(
            started >= finished,
            "a run started while the previous one was unfinished: {runs:?}"
        );
        assert!(
            tick >= finished,
            "a tick that came while the previous run was unfinished was not dropped: {runs:?}"
        );
    }
}

#[test]
fn overlap_queue_holds_a_tick_until_the_unfinished_run_ends() {
    let runs = overlapping("queue");
    for pair in runs.windows(2) {
        let ((_, _, finished), (tick, started, _)) = (pair[0], pair[1]);
        assert!(
            started >= finished,
            "a run started while the previous one was unfinished: {runs:?}"
        );
        // The tick came during the previous run and waited for it.
        assert!(
            tick < finished,
            "the run is not for a tick that waited: {runs:?}"
        );
    }
}
