//! Outbound HTTP and secrets, black-box: the real `host` binary runs real
//! components against real HTTP servers on loopback (the payments example's
//! fake provider, and a TLS server with a generated certificate).

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use common::provider::{KEY, Provider, cart, checkout, run_with_key, state_bytes};
use common::{Sandbox, component};
use serde_json::{Value, json};

fn requests_of<'a>(report: &'a Value, step: &str, action: &str) -> Vec<&'a Value> {
    report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == step && t["action"] == action)
        .flat_map(|t| t["requests"].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn the_checkout_charges_once_and_the_key_is_never_stored() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "pay");
    let manifest = checkout(&sandbox, &provider, &[]);
    let run = run_with_key(&sandbox, &manifest, &cart("tok_visa"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["status"], "done", "{report:#}");
    assert_eq!(report["output"]["charge"], "ch_1");
    assert_eq!(
        run.calls(),
        [
            "invoke reserve-stock",
            "invoke charge-payment",
            "invoke create-order",
            "invoke notify-customer"
        ]
    );
    assert_eq!(report["trace"][2]["step"], "create-order");
    let orders = sandbox.rows("order");
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].1["charge"], "ch_1");
    let ledger = provider.ledger();
    assert_eq!(
        ledger["charges"].as_object().unwrap().len(),
        1,
        "{ledger:#}"
    );
    assert_eq!(ledger["charges"]["ch_1"]["refunded"], false);
    assert_eq!(ledger["webhooks"].as_array().unwrap().len(), 1);
    // The charge went out with the host's idempotency key, and the trace shows it.
    let key = ledger["charges"]["ch_1"]["idempotency_key"]
        .as_str()
        .unwrap();
    let run_id = report["run"].as_str().unwrap();
    assert_eq!(key, format!("checkout:{run_id}:charge-payment:invoke:1"));
    let requests = requests_of(&report, "charge-payment", "invoke");
    assert_eq!(requests.len(), 1, "{report:#}");
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["url"], format!("{}/v1/charges", provider.url()));
    assert_eq!(requests[0]["status"], 201);
    // The secret's value is nowhere: not in the state file, not in the logs,
    // not in `runs show`.
    let shown = sandbox.host(&["runs", "show", run_id]);
    assert!(shown.stdout.contains("/v1/charges"), "{}", shown.stdout);
    for (what, text) in [
        ("the state file", state_bytes(&sandbox)),
        ("the log", run.stderr.clone()),
        ("the report", run.stdout.clone()),
        ("runs show", shown.stdout.clone()),
    ] {
        assert!(!text.contains(KEY), "the secret is in {what}");
    }
}

#[test]
fn a_failing_step_after_the_charge_refunds_it_and_releases_the_stock() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "pay");
    provider.control(json!({"webhook_status": 500}));
    let manifest = checkout(&sandbox, &provider, &[]);
    let run = run_with_key(&sandbox, &manifest, &cart("tok_visa"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(report["error"]["step"], "notify-customer");
    let ledger = provider.ledger();
    assert_eq!(ledger["charges"]["ch_1"]["refunded"], true, "{ledger:#}");
    assert_eq!(ledger["refunds"].as_object().unwrap().len(), 1);
    let refund = requests_of(&report, "charge-payment", "compensate");
    assert_eq!(refund.len(), 1, "{report:#}");
    assert_eq!(refund[0]["status"], 200);
    for collection in ["reservation", "order"] {
        assert!(
            sandbox
                .rows(collection)
                .iter()
                .all(|(_, _, deleted)| deleted.is_some())
                || sandbox.rows(collection).is_empty(),
            "{collection} was released"
        );
    }
}

#[test]
fn a_declined_card_reverts_without_charging() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "pay");
    let manifest = checkout(&sandbox, &provider, &[]);
    let run = run_with_key(&sandbox, &manifest, &cart("tok_declined"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{report:#}"
    );
    assert!(provider.ledger()["charges"].as_object().unwrap().is_empty());
    // A permanent failure: one attempt, no retry of a declined card.
    let charges: Vec<_> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == "charge-payment" && t["action"] == "invoke")
        .collect();
    assert_eq!(charges.len(), 1);
}

#[test]
fn a_missing_secret_stops_the_run_before_any_step() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "pay");
    let manifest = checkout(&sandbox, &provider, &[]);
    let run = sandbox.run(&manifest, &cart("tok_visa"));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("WASAGA_SECRET_PAY_KEY"),
        "{}",
        run.stderr
    );
    assert!(provider.ledger()["requests"].as_array().unwrap().is_empty());
    // A secrets file gives it too.
    let secrets = sandbox.path("secrets.toml");
    std::fs::write(&secrets, format!("pay-key = \"{KEY}\"\n")).unwrap();
    let run = sandbox.host(&[
        "run",
        manifest.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--input",
        &cart("tok_visa"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_host_killed_after_the_charge_resumes_with_the_same_key_and_charges_once() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "pay");
    let manifest = checkout(&sandbox, &provider, &[]);
    // Dies once the charge's requests are noted, before its end is journaled.
    let status = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .env("WASAGA_CRASH_AT", "requests:charge-payment:invoke")
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--input",
            &cart("tok_visa"),
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), None, "killed");
    assert_eq!(provider.ledger()["charges"].as_object().unwrap().len(), 1);
    let resumed = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .args(["resume", "--all"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let ledger = provider.ledger();
    let charge_requests: Vec<&Value> = ledger["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/charges")
        .collect();
    assert_eq!(charge_requests.len(), 2, "sent twice: {ledger:#}");
    assert_eq!(
        charge_requests[0]["idempotency_key"], charge_requests[1]["idempotency_key"],
        "with the same key"
    );
    assert_eq!(
        ledger["charges"].as_object().unwrap().len(),
        1,
        "charged once: {ledger:#}"
    );
    let conn = rusqlite::Connection::open(sandbox.state()).unwrap();
    let status: String = conn
        .query_row("SELECT status FROM runs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(status, "done");
}

#[test]
fn a_slow_provider_is_cut_at_the_deadline_and_the_saga_compensates() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "pay");
    provider.control(json!({"slow_ms": 5000}));
    let manifest = checkout(
        &sandbox,
        &provider,
        &[(
            "retries = { max = 2, interval = \"200ms\" }\ntimeout = \"10s\"",
            "timeout = \"1s\"",
        )],
    );
    let run = run_with_key(&sandbox, &manifest, &cart("tok_visa"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    let charge = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["step"] == "charge-payment")
        .unwrap();
    assert!(
        charge["duration_ms"].as_f64().unwrap() < 4000.0,
        "cut at the 1 s deadline, not when the provider answers at 5 s: {charge:#}"
    );
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(report["error"]["step"], "charge-payment");
    assert_eq!(
        report["trace"].as_array().unwrap().last().unwrap()["step"],
        "reserve-stock",
        "the reservation was released: {report:#}"
    );
}

/// A manifest with one `http-probe` step granted `grants`, secrets
/// declared by `secrets` (TOML), and the input given at run time.
fn probe_manifest(sandbox: &Sandbox, grants: &str, secrets: &str) -> PathBuf {
    let text = format!(
        "[workflow]\nname = \"outbound\"\n\n{secrets}\n\n[steps.call]\ncomponent = \"{}\"\ngrants = {{ {grants} }}\n\n[[flow]]\nrun = \"call\"\ninput = \"input\"\nas = \"out\"\n\n[output]\nvalue = \"out\"\n",
        component("http-probe").display()
    );
    let path = sandbox.path("outbound.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_request_to_an_ungranted_host_fails_in_the_guest_with_the_grant_to_add() {
    let sandbox = Sandbox::new();
    let granted = Provider::start(&sandbox, "granted");
    let other = Provider::start(&sandbox, "other");
    let manifest = probe_manifest(&sandbox, &format!("http = [\"{}\"]", granted.url()), "");
    let input = json!({"method": "POST", "url": format!("{}/webhook", other.url())});
    let run = sandbox.run(&manifest, &input.to_string());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["error"]["kind"], "not-allowed", "{report:#}");
    let requests = requests_of(&report, "call", "invoke");
    let denial = requests[0]["error"].as_str().unwrap();
    let line = format!(
        "grants = {{ http = [\"{}\", \"http://127.0.0.1:{}\"] }}",
        granted.url(),
        other.port
    );
    assert!(denial.contains(&line), "{denial}");
    assert!(
        run.stderr.contains(&line),
        "the step's log shows it: {}",
        run.stderr
    );
    assert!(other.ledger()["requests"].as_array().unwrap().is_empty());
}

#[test]
fn a_wildcard_grant_does_not_reach_private_addresses() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "private");
    let manifest = probe_manifest(&sandbox, "http = [\"http://*:*\"]", "");
    for host in ["localhost", "127.0.0.1"] {
        let input =
            json!({"method": "POST", "url": format!("http://{host}:{}/webhook", provider.port)});
        let run = sandbox.run(&manifest, &input.to_string());
        assert_eq!(run.code, 1, "{}", run.stderr);
        let report = run.report();
        assert_eq!(report["error"]["kind"], "not-allowed", "{report:#}");
        let requests = requests_of(&report, "call", "invoke");
        let error = requests[0]["error"].as_str().unwrap();
        assert!(error.contains("private address"), "{host}: {error}");
    }
    assert!(provider.ledger()["requests"].as_array().unwrap().is_empty());
}

#[test]
fn a_secret_is_swapped_in_only_on_its_hosts() {
    let sandbox = Sandbox::new();
    let home = Provider::start(&sandbox, "home");
    let elsewhere = Provider::start(&sandbox, "elsewhere");
    let manifest = probe_manifest(
        &sandbox,
        &format!(
            "http = [\"{}\", \"{}\"], secrets = [\"pay-key\"]",
            home.url(),
            elsewhere.url()
        ),
        &format!("[secrets.pay-key]\nhosts = [\"{}\"]", home.url()),
    );
    let charge = |url: &str, place: &str| {
        json!({"method": "POST", "url": format!("{url}/v1/charges"), "json": {"amount": 1, "card": "tok_visa"},
               "secret": {"name": "pay-key", "in": place}})
    };
    let echo = json!({"method": "POST", "url": format!("{}/echo", home.url()),
                      "secret": {"name": "pay-key", "in": "header"}});
    let input = json!({"requests": [
        charge(&home.url(), "header"),
        charge(&elsewhere.url(), "header"),
        echo,
    ]});
    let run = run_with_key(&sandbox, &manifest, &input.to_string());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.report()["output"];
    assert_eq!(out[0]["status"], 201, "the home host got the key: {out:#}");
    assert_eq!(
        out[1]["status"], 401,
        "elsewhere got the placeholder: {out:#}"
    );
    let seen = elsewhere.ledger()["requests"][0]["authorization"].clone();
    assert!(
        seen.as_str()
            .unwrap()
            .starts_with("Bearer wasaga-secret-pay-key-"),
        "{seen}"
    );
    // A server that echoes the key back hands the step the placeholder,
    // never the value (which it could send anywhere).
    let echoed = out[2]["body"].as_str().unwrap();
    assert!(echoed.contains("Bearer wasaga-secret-pay-key-"), "{out:#}");
    assert!(!echoed.contains(KEY), "{out:#}");
    assert!(!state_bytes(&sandbox).contains(KEY));
    assert!(!run.stderr.contains(KEY));
    assert!(!run.stdout.contains(KEY));
}

#[test]
fn a_secret_is_swapped_in_the_query_and_the_body_too() {
    let sandbox = Sandbox::new();
    let home = Provider::start(&sandbox, "home");
    let manifest = probe_manifest(
        &sandbox,
        &format!("http = [\"{}\"], secrets = [\"pay-key\"]", home.url()),
        &format!("[secrets.pay-key]\nhosts = [\"{}\"]", home.url()),
    );
    let input = json!({"requests": [
        {"method": "POST", "url": format!("{}/webhook?x=1", home.url()), "json": {"a": 1},
         "secret": {"name": "pay-key", "in": "body"}},
        {"method": "POST", "url": format!("{}/webhook", home.url()),
         "secret": {"name": "pay-key", "in": "query"}},
    ]});
    let run = run_with_key(&sandbox, &manifest, &input.to_string());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ledger = home.ledger();
    assert_eq!(ledger["webhooks"][0]["key"], KEY, "{ledger:#}");
    assert_eq!(ledger["requests"][1]["query_key"], KEY, "{ledger:#}");
    // The trace has the URL without its query, so without the key.
    let report = run.report();
    let requests = requests_of(&report, "call", "invoke");
    assert_eq!(requests[1]["url"], format!("{}/webhook", home.url()));
    assert!(!state_bytes(&sandbox).contains(KEY));
}

#[test]
fn an_oversized_response_fails_the_step_with_a_clear_error() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "big");
    provider.control(json!({"big_kb": 2048}));
    let manifest = probe_manifest(
        &sandbox,
        &format!(
            "http = {{ allow = [\"{}\"], max-response = \"1MiB\" }}",
            provider.url()
        ),
        "",
    );
    let input = json!({"url": format!("{}/big", provider.url())});
    let run = sandbox.run(&manifest, &input.to_string());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("too large"), "{report:#}");
    let requests = requests_of(&report, "call", "invoke");
    assert!(
        requests[0]["error"]
            .as_str()
            .unwrap()
            .contains("larger than the 1048576 bytes"),
        "{report:#}"
    );
    // Within the limit it is read whole.
    provider.control(json!({"big_kb": 512}));
    let run = sandbox.run(&manifest, &input.to_string());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.report()["output"][0]["body"].as_str().unwrap().len(),
        512 * 1024
    );
}

/// A one-connection-at-a-time HTTPS server on loopback with a certificate
/// for 127.0.0.1 signed by a CA of its own; answers every request with 200.
fn tls_server(sandbox: &Sandbox) -> (u16, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let ca_file = sandbox.path("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = [0u8; 4096];
            if tls.read(&mut request).is_ok() {
                let body = b"{\"secure\":true}";
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(body);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    (port, ca_file)
}

#[test]
fn https_to_a_private_ca_works_with_ca_file_and_fails_without() {
    let sandbox = Sandbox::new();
    let (port, ca_file) = tls_server(&sandbox);
    let url = format!("https://127.0.0.1:{port}");
    let manifest = probe_manifest(&sandbox, &format!("http = [\"{url}\"]"), "");
    let input = json!({"url": format!("{url}/secure")}).to_string();
    let run = sandbox.run(&manifest, &input);
    assert_eq!(run.code, 1, "an unknown CA is refused: {}", run.stderr);
    let report = run.report();
    assert!(
        report["error"]["message"].as_str().unwrap().contains("TLS"),
        "{report:#}"
    );
    let run = sandbox.host(&[
        "run",
        manifest.to_str().unwrap(),
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--input",
        &input,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.report()["output"][0]["body"], "{\"secure\":true}");
}

/// Every `wasi:http` fields resource lives in the host's memory: a guest
/// that hoards handles fails its step (it used to be allowed a million).
#[test]
fn a_guest_hoarding_handles_fails_its_step() {
    let sandbox = Sandbox::new();
    let manifest = probe_manifest(&sandbox, "", "");
    let run = sandbox.run(
        &manifest,
        &json!({"requests": [], "hold_fields": 20000}).to_string(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["error"]["kind"], "trap", "{report:#}");
    assert_eq!(report["error"]["permanent"], true, "{report:#}");
    let run = sandbox.run(
        &manifest,
        &json!({"requests": [], "hold_fields": 5000}).to_string(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A general-purpose WASI HTTP client (waki), not the SDK's: the host's
/// grant and trace apply to it all the same.
#[test]
fn an_ordinary_wasi_http_client_works_and_is_held_to_the_grant() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "waki");
    let text = format!(
        "[workflow]\nname = \"waki\"\n\n[steps.get]\ncomponent = \"{}\"\ngrants = {{ http = [\"{}\"] }}\n\n[[flow]]\nrun = \"get\"\ninput = \"input\"\nas = \"out\"\n\n[output]\nvalue = \"out\"\n",
        component("waki-client").display(),
        provider.url()
    );
    let manifest = sandbox.path("waki.toml");
    std::fs::write(&manifest, text).unwrap();
    let input = json!({"url": format!("{}/v1/ledger", provider.url())});
    let run = sandbox.run(&manifest, &input.to_string());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["output"]["status"], 200, "{report:#}");
    let ledger: Value = serde_json::from_str(report["output"]["body"].as_str().unwrap()).unwrap();
    assert!(ledger["charges"].is_object());
    assert_eq!(requests_of(&report, "get", "invoke")[0]["status"], 200);
    let elsewhere = json!({"url": "http://127.0.0.1:9/"});
    let run = sandbox.run(&manifest, &elsewhere.to_string());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    let denial = requests_of(&report, "get", "invoke")[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(denial.starts_with("denied: "), "{denial}");
}

/// A call's requests are bounded (`max-requests`): past the limit each is
/// refused in the guest, and the trace notes the refusal once.
#[test]
fn requests_past_the_limit_are_refused() {
    let sandbox = Sandbox::new();
    let provider = Provider::start(&sandbox, "limit");
    let manifest = probe_manifest(
        &sandbox,
        &format!(
            "http = {{ allow = [\"{}\"], max-requests = 3 }}",
            provider.url()
        ),
        "",
    );
    let one = json!({"method": "POST", "url": format!("{}/webhook", provider.url())});
    let input = json!({"requests": [one, one, one, one, one]});
    let run = sandbox.run(&manifest, &input.to_string());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    let requests = requests_of(&report, "call", "invoke");
    assert_eq!(requests.len(), 4, "{report:#}");
    assert!(
        requests[3]["error"]
            .as_str()
            .unwrap()
            .contains("more than 3 requests"),
        "{report:#}"
    );
    assert_eq!(provider.ledger()["webhooks"].as_array().unwrap().len(), 3);
}
