//! `host serve` against a real server process on a loopback port: every
//! route, status codes, auth, live events in order, a burst of 200 runs,
//! a restart mid-run, and the runs page in a real browser.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Sandbox;
use common::server::Server;
use serde_json::{Value, json};

fn brand_dir() -> PathBuf {
    common::repo().join("example-plugins").join("brand")
}

use common::server::probe_dir;

#[test]
fn every_route_answers_with_the_right_status() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&brand_dir(), &probe_dir(&sandbox)], &[]);
    assert_eq!(
        server.get("/healthz"),
        (200, json!({"status": "ok", "event_streams": 0}))
    );

    let (status, workflows) = server.get("/workflows");
    assert_eq!(status, 200);
    let names: Vec<&str> = workflows["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"create-brand") && names.contains(&"greet"),
        "{names:?}"
    );
    let greet = workflows["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "greet")
        .unwrap();
    assert_eq!(greet["input_schema"]["required"], json!(["name"]));
    assert!(
        !workflows
            .to_string()
            .contains(&sandbox.dir.path().display().to_string()),
        "no host paths"
    );

    let (status, report, _) = server.post(
        "/workflows/create-brand/runs",
        json!({"input": {"name": "Acme"}}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "done");
    assert_eq!(report["output"]["name"], "Acme");
    let run = report["run"].as_str().unwrap().to_string();

    let (status, reverted, _) = server.post(
        "/workflows/create-brand/runs",
        json!({"input": {"name": "A"}}),
    );
    assert_eq!(status, 422);
    assert_eq!(reverted["error"]["kind"], "invalid-data");

    let (status, bad, _) = server.post("/workflows/greet/runs", json!({"input": {"name": 5}}));
    assert_eq!(status, 400);
    assert!(
        bad["violations"][0]
            .as_str()
            .unwrap()
            .starts_with("at /name"),
        "{bad}"
    );
    let (status, _, _) = server.post("/workflows/greet/runs", json!({"inptu": {}}));
    assert_eq!(status, 400, "an unknown body field");
    let (status, missing, _) = server.post("/workflows/nope/runs", json!({}));
    assert_eq!(status, 404);
    assert!(missing["workflows"].as_array().unwrap().len() >= 2);

    let (status, accepted, location) = server.post("/workflows/slow/runs?wait=false", json!({}));
    assert_eq!(status, 202);
    let slow = accepted["run"].as_str().unwrap().to_string();
    assert_eq!(location.as_deref(), Some(format!("/runs/{slow}").as_str()));
    assert_eq!(server.wait_final(&slow)["output"], 3);

    let (status, one) = server.get(&format!("/runs/{run}"));
    assert_eq!(status, 200);
    assert_eq!(one["trace"].as_array().unwrap().len(), 2);
    assert_eq!(server.get("/runs/nope").0, 404);
    let (status, list) = server.get("/runs?workflow=create-brand&limit=1");
    assert_eq!(status, 200);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    let cursor = list["next_cursor"].as_str().unwrap();
    let (_, page2) = server.get(&format!(
        "/runs?workflow=create-brand&limit=1&cursor={cursor}"
    ));
    assert_ne!(page2["runs"][0]["run"], list["runs"][0]["run"]);
    assert_eq!(server.get("/runs?status=finished").0, 400);

    let (status, cancelled, _) = server.post(&format!("/runs/{run}/cancel"), json!({}));
    assert_eq!(status, 422);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        server.post(&format!("/runs/{run}/cancel"), json!({})).0,
        409
    );

    let (status, waiting, _) = server.post("/workflows/approval/runs", json!({}));
    assert_eq!(status, 202);
    assert_eq!(waiting["status"], "waiting");
    let approval = waiting["run"].as_str().unwrap();
    assert_eq!(
        server
            .post(&format!("/runs/{approval}/steps/after/success"), json!({}))
            .0,
        409
    );
    let (status, done, _) = server.post(
        &format!("/runs/{approval}/steps/ask/success"),
        json!({"output": {"ok": "yes"}}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["output"], json!({"ok": "yes"}));

    let (status, failed_run, _) = server.post("/workflows/approval/runs", json!({}));
    assert_eq!(status, 202);
    let id = failed_run["run"].as_str().unwrap();
    let (status, reverted, _) = server.post(
        &format!("/runs/{id}/steps/ask/failure"),
        json!({"error": {"kind": "forbidden", "message": "no"}}),
    );
    assert_eq!(status, 422);
    assert_eq!(reverted["error"]["kind"], "forbidden");

    let (status, openapi) = server.get("/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in [
        "/workflows/{name}/runs",
        "/runs",
        "/runs/{id}",
        "/runs/{id}/cancel",
        "/runs/{id}/events",
        "/runs/{id}/steps/{step}/success",
        "/runs/{id}/steps/{step}/failure",
        "/workflows",
        "/healthz",
        "/openapi.json",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is documented");
    }
    // The request guard's answers are documented where it can give them.
    let start = &openapi["paths"]["/workflows/{name}/runs"]["post"]["responses"];
    assert!(
        start.get("415").is_some() && start.get("403").is_some(),
        "{start:#}"
    );
    assert!(
        openapi["paths"]["/runs"]["get"]["responses"]
            .get("415")
            .is_none()
    );
    let (status, page) = server.get("/");
    assert_eq!(status, 200);
    assert!(
        page.as_str()
            .unwrap()
            .contains("<title>Wasaga runs</title>")
    );
    server.stop();
}

#[test]
fn a_token_guards_every_route_but_healthz() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&probe_dir(&sandbox)], &["--token", "s3cret"]);
    let anonymous = Server {
        child: Command::new("true").spawn().unwrap(),
        base: server.base.clone(),
        token: None,
    };
    assert_eq!(anonymous.get("/healthz").0, 200);
    for path in ["/runs", "/workflows", "/openapi.json", "/"] {
        assert_eq!(anonymous.get(path).0, 401, "{path}");
    }
    assert_eq!(
        anonymous
            .post("/workflows/greet/runs", json!({"input": {"name": "Ada"}}))
            .0,
        401
    );
    let wrong = Server {
        child: Command::new("true").spawn().unwrap(),
        base: server.base.clone(),
        token: Some("guess".into()),
    };
    assert_eq!(wrong.get("/runs").0, 401);
    assert_eq!(server.get("/runs").0, 200);
    assert_eq!(
        server
            .post("/workflows/greet/runs", json!({"input": {"name": "Ada"}}))
            .0,
        200
    );
    // Only the page and its event stream (EventSource sends no headers) take
    // the token in the query; the API routes want the header.
    assert_eq!(anonymous.get("/?token=s3cret").0, 200, "the page");
    assert_ne!(
        anonymous.get("/runs/some-run/events?token=s3cret").0,
        401,
        "the page's event stream passes it in the query"
    );
    for path in [
        "/runs?token=s3cret",
        "/workflows?token=s3cret",
        "/openapi.json?token=s3cret",
    ] {
        assert_eq!(anonymous.get(path).0, 401, "{path}");
    }
}

#[test]
fn a_body_past_the_limit_is_refused() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&probe_dir(&sandbox)], &["--max-body", "64KiB"]);
    let big = "x".repeat(100 * 1024);
    let (status, _, _) = server.post("/workflows/greet/runs", json!({"input": {"name": big}}));
    assert_eq!(status, 413);
}

#[test]
fn the_event_stream_delivers_a_runs_events_in_order_then_its_end() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&probe_dir(&sandbox)], &[]);
    let (_, accepted, _) = server.post("/workflows/compensates/runs?wait=false", json!({}));
    let run = accepted["run"].as_str().unwrap();
    let mut response = server
        .agent()
        .get(&format!("{}/runs/{run}/events", server.base))
        .call()
        .unwrap();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .unwrap();
    let mut records = Vec::new();
    let mut statuses = Vec::new();
    for block in text.split("\n\n") {
        let event = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or("");
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let data: Value = serde_json::from_str(data).unwrap();
        match event {
            "record" => records.push(data),
            "status" => statuses.push(data["status"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {seqs:?}"
    );
    let calls: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "finished")
        .map(|r| {
            format!(
                "{} {} #{} {}",
                r["action"].as_str().unwrap(),
                r["node"].as_str().unwrap(),
                r["attempt"],
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            "invoke reserve #1 ok",
            "invoke charge #1 error",
            "invoke charge #2 error",
            "compensate charge #1 ok",
            "compensate reserve #1 ok"
        ]
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("reverted"),
        "{statuses:?}"
    );
}

#[test]
fn a_burst_of_200_concurrent_runs_loses_none() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&brand_dir()], &[]);
    let base = server.base.clone();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut response = agent
                    .post(&format!("{base}/workflows/create-brand/runs"))
                    .send_json(json!({"input": {"name": format!("Brand {i}")}}))
                    .unwrap();
                let status = response.status().as_u16();
                let report: Value =
                    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
                (status, report)
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "every run done: {:?}",
        results.iter().find(|(s, _)| *s != 200)
    );
    let (_, list) = server.get("/runs?limit=500");
    let listed: std::collections::HashMap<String, String> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["run"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (_, report) in &results {
        assert_eq!(
            listed
                .get(report["run"].as_str().unwrap())
                .map(String::as_str),
            Some("done")
        );
    }
    assert_eq!(sandbox.rows("brand").len(), 200);
}

#[test]
fn a_server_restarted_mid_run_resumes_it() {
    let sandbox = Sandbox::new();
    let dir = probe_dir(&sandbox);
    let server = Server::start(&sandbox, &[&dir], &[]);
    let (_, accepted, _) = server.post("/workflows/slow/runs?wait=false", json!({}));
    let run = accepted["run"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(450));
    drop(server); // SIGKILL, mid-run
    let server = Server::start(&sandbox, &[&dir], &[]);
    let report = server.wait_final(&run);
    assert_eq!(report["status"], "done");
    assert_eq!(report["output"], 3);
    let one: Vec<&Value> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == "one")
        .collect();
    assert_eq!(
        one.len(),
        1,
        "the step finished before the kill did not run again"
    );
}

#[test]
fn cancelling_a_run_in_flight_compensates_it_once() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&probe_dir(&sandbox)], &[]);
    let (_, accepted, _) = server.post("/workflows/slow/runs?wait=false", json!({}));
    let run = accepted["run"].as_str().unwrap().to_string();
    // Cancel once `one` is done (`two` is then running, for 300 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.get(&format!("/runs/{run}")).1["trace"]
        .as_array()
        .is_some_and(|t| t.iter().any(|c| c["step"] == "one"))
    {
        assert!(Instant::now() < deadline, "step one never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, cancelled, _) = server.post(&format!("/runs/{run}/cancel"), json!({}));
    assert_eq!(status, 422, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // The run executing in this server is cancelled in place: no second
    // execution of it starts beside the first. Every call once, attempt 1,
    // and the compensations mirror the invokes.
    let calls: Vec<(String, String, u64)> = cancelled["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["action"].as_str().unwrap().to_string(),
                t["step"].as_str().unwrap().to_string(),
                t["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    let invoked: Vec<&str> = calls
        .iter()
        .filter(|c| c.0 == "invoke")
        .map(|c| c.1.as_str())
        .collect();
    let mut compensated: Vec<&str> = calls
        .iter()
        .filter(|c| c.0 == "compensate")
        .map(|c| c.1.as_str())
        .collect();
    compensated.reverse();
    assert!(
        invoked == ["one", "two"] || invoked == ["one", "two", "three"],
        "{cancelled}"
    );
    assert_eq!(compensated, invoked, "{cancelled}");
    assert!(calls.iter().all(|c| c.2 == 1), "{cancelled}");
}

#[test]
fn a_bad_manifest_keeps_the_server_from_starting() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("broken.toml"),
        "[workflow]\nname = \"broken\"\n[[flow]]\nrun = \"missing\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("WASAGA_STATE", sandbox.state())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.toml:4:7: unknown step 'missing'"),
        "{stderr}"
    );
}

#[test]
fn the_runs_page_shows_the_timeline_in_a_real_browser() {
    let browser = common::repo().join("tests").join("browser");
    if std::env::var_os("WASAGA_SKIP_BROWSER").is_some() {
        eprintln!("WASAGA_SKIP_BROWSER is set: the browser test does not run");
        return;
    }
    assert!(
        browser
            .join("node_modules")
            .join("playwright-core")
            .exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci` in tests/browser (see .ci/run), or WASAGA_SKIP_BROWSER=1"
    );
    let sandbox = Sandbox::new();
    // A daily schedule (it does not fire while the test runs): the page
    // shows its next tick.
    std::fs::create_dir_all(sandbox.path("scheduled")).unwrap();
    sandbox.manifest(
        "scheduled/nightly.toml",
        "[workflow]\nname = \"nightly\"\nschedule = { cron = \"0 3 * * *\", timezone = \"Europe/Paris\" }\n[steps.a]\ncomponent = \"{probe}\"\n[[flow]]\nrun = \"a\"\n",
    );
    let server = Server::start(
        &sandbox,
        &[&probe_dir(&sandbox), &sandbox.path("scheduled")],
        &[],
    );
    let (status, report, _) = server.post("/workflows/compensates/runs", json!({}));
    assert_eq!(status, 422);
    let run = report["run"].as_str().unwrap();
    let screenshot = common::wasm_dir()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("screenshots")
        .join("runs-page.png");
    let output = Command::new("node")
        .arg(browser.join("runs-page.mjs"))
        .args([&server.base, run, screenshot.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        screenshot.exists(),
        "a screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());
}

/// Sends `request` (HTTP/1.1 text, headers and all) to the server as is and
/// returns its whole answer: headers a client library would set for us
/// (`Host`, `Content-Type`) are exactly what this test needs to choose.
fn raw(server: &Server, request: &str) -> String {
    use std::io::Write;
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A page on another site cannot drive a server on loopback: no run starts
/// from a form or `text/plain` POST (browsers send those cross-site without
/// asking), and a rebound DNS name or another origin reads nothing.
#[test]
fn cross_site_requests_and_foreign_host_names_are_refused() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[&probe_dir(&sandbox)], &[]);
    let host = server.base.trim_start_matches("http://").to_string();
    let body = r#"{"input": {"name": "Ada"}}"#;
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let answer = raw(
            &server,
            &format!(
                "POST /workflows/greet/runs HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status_of(&answer), 415, "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
    }
    // A bodiless cross-site POST (`fetch` with `mode: "no-cors"`) carries no
    // Content-Type; the browser says it is cross-site.
    let bodiless = raw(
        &server,
        &format!(
            "POST /workflows/greet/runs HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: cross-site\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status_of(&bodiless), 403, "{bodiless}");
    // A page on another local port is "same-site" for the browser, but not
    // this server's own.
    let other_port = raw(
        &server,
        &format!(
            "POST /workflows/greet/runs HTTP/1.1\r\nHost: {host}\r\nOrigin: http://localhost:1\r\nSec-Fetch-Site: same-site\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status_of(&other_port), 403, "{other_port}");
    assert_eq!(server.get("/runs").1["runs"], json!([]), "no run started");
    // A POST to a route that takes none is a 405, not a 415.
    let wrong_method = raw(
        &server,
        &format!(
            "POST /runs HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status_of(&wrong_method), 405, "{wrong_method}");

    let read = |headers: &str| {
        raw(
            &server,
            &format!("GET /runs HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"),
        )
    };
    let rebound = read("Host: evil.example\r\n");
    assert_eq!(status_of(&rebound), 403, "{rebound}");
    let foreign = read(&format!("Host: {host}\r\nOrigin: http://evil.example\r\n"));
    assert_eq!(status_of(&foreign), 403, "{foreign}");
    let own = read(&format!("Host: {host}\r\nOrigin: http://{host}\r\n"));
    assert_eq!(status_of(&own), 200, "{own}");
    let page = raw(
        &server,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&page), 200);
    let lower = page.to_ascii_lowercase();
    for header in [
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "content-security-policy:",
    ] {
        assert!(lower.contains(header), "{header} in {page:.400}");
    }
    server.stop();
}

/// A client that trickles its headers (slowloris) is cut off at the header
/// timeout, and connections past `--max-connections` wait instead of
/// exhausting the server's file descriptors; the server keeps answering.
#[test]
fn half_sent_requests_are_cut_off_and_connections_are_capped() {
    use std::io::Write;
    let sandbox = Sandbox::new();
    let server = Server::start(
        &sandbox,
        &[&brand_dir()],
        &["--header-timeout", "1s", "--max-connections", "4"],
    );
    let address = server.base.trim_start_matches("http://").to_string();
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "cut off at the 1 s header timeout, not before and not never: {waited:?}"
    );
    // Four idle connections take every slot; a fifth is accepted only when
    // one of them is cut off at its header timeout.
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let answer = raw(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for a slot: {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// An event stream whose client went away ends at once (each used to live
/// on until its run ended, waking every second), and at most
/// `--max-event-streams` are open at a time (more get 503).
#[test]
fn event_streams_end_with_their_client_and_are_capped() {
    use std::io::Write;
    let sandbox = Sandbox::new();
    let server = Server::start(
        &sandbox,
        &[&probe_dir(&sandbox)],
        &["--max-event-streams", "2"],
    );
    let (status, body, _) = server.post("/workflows/approval/runs?wait=false", json!({}));
    assert_eq!(status, 202, "{body}");
    let run = body["run"].as_str().unwrap().to_string();
    let address = server.base.trim_start_matches("http://").to_string();
    let open = || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /runs/{run}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).unwrap();
        (stream, String::from_utf8_lossy(&first).into_owned())
    };
    let streams = |server: &Server| server.get("/healthz").1["event_streams"].as_u64().unwrap();
    // The run waits for an answer: its stream stays open.
    for _ in 0..5 {
        let (stream, head) = open();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(streams(&server), 1);
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while streams(&server) != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the stream's task outlived its client"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (_a, head_a) = open();
    let (_b, head_b) = open();
    let (_c, head_c) = open();
    assert!(head_a.starts_with("HTTP/1.1 200") && head_b.starts_with("HTTP/1.1 200"));
    assert!(head_c.starts_with("HTTP/1.1 503"), "{head_c}");
}

/// A cancel interrupts a call in progress instead of waiting for it: a step
/// that would sleep for a minute ends at once and is compensated, with what
/// ran before it. Asked of this server over HTTP, the call ends at once;
/// asked with `host cancel` from another process (which can only write the
/// journal), within the server's one-second look at it.
#[test]
fn a_cancel_interrupts_a_call_in_progress() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("stuck");
    std::fs::create_dir_all(&dir).unwrap();
    let probe = common::component("probe").display().to_string();
    std::fs::write(
        dir.join("stuck.toml"),
        format!(
            "[workflow]\nname = \"stuck\"\n[steps.first]\ncomponent = \"{probe}\"\nconfig = {{ output = 1 }}\n\
             [steps.stuck]\ncomponent = \"{probe}\"\ntimeout = \"10m\"\nconfig = {{ sleep-ms = 60000, output = 2 }}\n\
             [[flow]]\nrun = \"first\"\n[[flow]]\nrun = \"stuck\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&sandbox, &[&dir], &[]);
    let start_stuck = || {
        let (_, accepted, _) = server.post("/workflows/stuck/runs?wait=false", json!({}));
        let run = accepted["run"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Until `stuck` has started.
        while !server.get(&format!("/runs/{run}")).1["trace"]
            .as_array()
            .is_some_and(|t| t.iter().any(|c| c["step"] == "first"))
        {
            assert!(Instant::now() < deadline, "step first never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        run
    };
    let expect_interrupted = |report: &Value| {
        assert_eq!(report["status"], "cancelled", "{report}");
        assert_eq!(
            common::calls_of(report),
            [
                "invoke first",
                "invoke stuck",
                "compensate stuck",
                "compensate first"
            ],
            "{report}"
        );
        let stuck = &report["trace"][1];
        assert_eq!(stuck["error"]["kind"], "cancelled", "{report}");
        assert!(
            stuck["duration_ms"].as_f64().unwrap() < 30_000.0,
            "{report}"
        );
    };

    let here = start_stuck();
    let (status, cancelled, _) = server.post(&format!("/runs/{here}/cancel"), json!({}));
    assert_eq!(status, 422, "{cancelled}");
    expect_interrupted(&cancelled);

    let elsewhere = start_stuck();
    let cancel = sandbox.host(&["cancel", &elsewhere]);
    assert_eq!(cancel.code, 1, "{}", cancel.stderr);
    expect_interrupted(&server.wait_final(&elsewhere));
}
