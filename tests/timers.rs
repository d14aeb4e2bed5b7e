//! Durable time through the real binary: a `sleep` that outlives the server
//! that started it, an async step whose answer never comes (`timeout`), and
//! `host resume` / `host cancel` of a sleeping run. Short durations and
//! polling with generous deadlines stand in for a test clock (the core's
//! tests move a clock by hand); nothing here waits a fixed time for a result.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::server::Server;
use common::{Sandbox, now_ms, unix_ms};
use serde_json::{Value, json};

/// `reserve`, a sleep of `nap`, then `ship` (which echoes what it got).
fn nap_manifest(sandbox: &Sandbox, dir: &str, nap: &str) -> PathBuf {
    std::fs::create_dir_all(sandbox.path(dir)).unwrap();
    sandbox.manifest(
        &format!("{dir}/nap.toml"),
        &format!(
            "[workflow]\nname = \"nap\"\n\
             [steps.reserve]\ncomponent = \"{{probe}}\"\nconfig = {{ output = {{ reserved = true }} }}\n\
             [steps.ship]\ncomponent = \"{{probe}}\"\nconfig = {{ echo-input = true }}\n\
             [[flow]]\nrun = \"reserve\"\nas = \"r\"\n\
             [[flow]]\nsleep = \"{nap}\"\nas = \"nap\"\n\
             [[flow]]\nrun = \"ship\"\ninput = \"{{'reserved': r.reserved, 'slept_until': nap.until}}\"\nas = \"s\"\n\
             [output]\nvalue = \"s\"\n"
        ),
    )
}

/// Polls `GET /runs/{run}` until its status is `status`.
fn wait_status(server: &Server, run: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, report) = server.get(&format!("/runs/{run}"));
        if code == 200 && report["status"] == status {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never became {status}: {report}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sleep_outlives_the_server_that_started_it_and_another_one_wakes_it_on_time() {
    let sandbox = Sandbox::new();
    let manifest = nap_manifest(&sandbox, "workflows", "2s");
    let dir = manifest.parent().unwrap();
    let first = Server::start(&sandbox, &[dir], &[]);
    let (code, report, _) = first.post("/workflows/nap/runs", json!({}));
    assert!(code == 202 || code == 200, "{code}: {report}");
    let run = report["run"].as_str().unwrap().to_string();
    let waiting = wait_status(&first, &run, "waiting");
    let wake_at = unix_ms(
        waiting["wake_at"]
            .as_str()
            .expect("a waiting run says when it wakes"),
    );
    // Killed while the run sleeps: nothing of the run is in its memory.
    drop(first);
    let second = Server::start(&sandbox, &[dir], &[]);
    let done = second.wait_final(&run);
    let woke = now_ms();
    assert_eq!(done["status"], "done", "{done:#}");
    assert!(
        woke >= wake_at,
        "finished before its time: {woke} < {wake_at}"
    );
    assert_eq!(done["output"]["reserved"], true);
    assert_eq!(
        unix_ms(done["output"]["slept_until"].as_str().unwrap()),
        wake_at
    );
    assert!(done.get("wake_at").is_none(), "{done:#}");
    let calls = common::calls_of(&done);
    assert_eq!(
        calls,
        ["invoke reserve", "invoke nap", "invoke ship"],
        "{done:#}"
    );
    // The sleep is one trace entry, under its name.
    let sleep = &done["trace"][1];
    assert_eq!(sleep["node"], "nap");
    assert_eq!(sleep["outcome"], "ok");
}

#[test]
fn an_async_step_whose_answer_never_comes_times_out_and_the_saga_compensates() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("workflows")).unwrap();
    sandbox.manifest(
        "workflows/approval.toml",
        "[workflow]\nname = \"approval\"\n\
         [steps.reserve]\ncomponent = \"{probe}\"\nconfig = { output = { reserved = true } }\n\
         [steps.ask]\ncomponent = \"{probe}\"\nasync = true\ntimeout = \"1s\"\nconfig = { output = { ticket = 42 } }\n\
         [steps.after]\ncomponent = \"{probe}\"\n\
         [[flow]]\nrun = \"reserve\"\n[[flow]]\nrun = \"ask\"\n[[flow]]\nrun = \"after\"\n",
    );
    let server = Server::start(&sandbox, &[&sandbox.path("workflows")], &[]);
    let (_, report, _) = server.post("/workflows/approval/runs", json!({}));
    let run = report["run"].as_str().unwrap().to_string();
    let waiting = wait_status(&server, &run, "waiting");
    assert!(waiting["wake_at"].is_string(), "{waiting:#}");
    let reverted = server.wait_final(&run);
    assert_eq!(reverted["status"], "reverted", "{reverted:#}");
    assert_eq!(reverted["error"]["kind"], "timeout");
    assert_eq!(reverted["error"]["step"], "ask");
    assert!(
        reverted["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer came within the step's timeout of 1s"),
        "{reverted:#}"
    );
    assert_eq!(
        common::calls_of(&reverted),
        [
            "invoke reserve",
            "invoke ask",
            "compensate ask",
            "compensate reserve"
        ]
    );
    // The compensation got what the invoke returned (the ticket to close).
    let compensate_ask = reverted["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["step"] == "ask" && t["action"] == "compensate")
        .unwrap();
    assert_eq!(compensate_ask["input"], json!({"ticket": 42}));
    // An answer after the deadline changes nothing.
    let late = sandbox.host(&["step", "succeed", &run, "ask", "--output", "{}"]);
    assert_eq!(late.code, 2, "{}", late.stdout);
    assert!(late.stderr.contains("is reverted"), "{}", late.stderr);
}

#[test]
fn host_resume_wakes_a_sleep_only_once_its_time_has_come_and_cancel_compensates_a_sleeping_run() {
    let sandbox = Sandbox::new();
    let manifest = nap_manifest(&sandbox, "flows", "1s");
    let started = sandbox.run(&manifest, "{}");
    assert_eq!(started.code, 0, "{}", started.stderr);
    let report = started.report();
    assert_eq!(report["status"], "waiting", "{report:#}");
    let run = report["run"].as_str().unwrap().to_string();
    let wake_at = unix_ms(report["wake_at"].as_str().unwrap());
    assert_eq!(started.calls(), ["invoke reserve", "invoke nap"]);
    // Until its time, a resume leaves it asleep; after it, one finishes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = now_ms();
        let resumed = sandbox.host(&["resume", "--all"]);
        assert_eq!(resumed.code, 0, "{}", resumed.stderr);
        let shown = sandbox.host(&["runs", "show", &run, "--json"]);
        let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
        if shown["status"] == "done" {
            assert_eq!(
                common::calls_of(&shown),
                ["invoke reserve", "invoke nap", "invoke ship"]
            );
            break;
        }
        assert_eq!(shown["status"], "waiting", "{shown:#}");
        assert!(
            before < wake_at + 1000,
            "not woken though its time came: {shown:#}"
        );
        assert!(Instant::now() < deadline, "never woken: {shown:#}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A cancel while it sleeps undoes what ran before the sleep.
    let asleep = nap_manifest(&sandbox, "long", "1h");
    let run = sandbox.run(&asleep, "{}").report()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = sandbox.host(&["cancel", &run]);
    let report = cancelled.report();
    assert_eq!(report["status"], "cancelled", "{}", cancelled.stderr);
    assert_eq!(
        common::calls_of(&report),
        ["invoke reserve", "invoke nap", "compensate reserve"]
    );
}
