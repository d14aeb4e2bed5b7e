//! OpenTelemetry traces, black-box: the real `host` binary sends OTLP over
//! HTTP to a small collector in this file, which decodes every batch (the
//! protobuf of the OTLP spec), while the checkout example runs against the
//! fake payment provider, which notes the `traceparent` each request carried.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Sandbox;
use common::provider::{KEY, Provider, cart, checkout};
use common::server::Server;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::{Value, json};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{TRACE}-{CALLER}-01")
}

/// One span as it arrived.
#[derive(Debug, Clone)]
struct Got {
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    code: i32,
    message: String,
    service: String,
}

impl Got {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// An OTLP/HTTP collector on a free loopback port: answers every POST with
/// an empty protobuf and keeps the spans it decoded.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Collector { port, spans }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans once one is named `name` (the batch thread sends them
    /// within its schedule delay, set short by the tests).
    fn wait_for(&self, name: &str) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if spans.iter().any(|s| s.name == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span '{name}' arrived: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads HTTP/1.1 requests off one connection (the exporter keeps it open).
fn serve(stream: TcpStream, kept: &Mutex<Vec<Got>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
        let mut got = Vec::new();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let status = span.status.unwrap_or_default();
                    got.push(Got {
                        trace: hex(&span.trace_id),
                        id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect(),
                        code: status.code,
                        message: status.message,
                        service: service.clone(),
                    });
                }
            }
        }
        kept.lock().unwrap().extend(got);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    }
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Got], name: &str) -> Vec<&'a Got> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span '{name}': {spans:#?}");
    found[0]
}

/// The requests the provider saw at `path`, with the `traceparent` each carried.
fn traceparents(provider: &Provider, path: &str) -> Vec<Value> {
    provider.ledger()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == path)
        .map(|r| r["traceparent"].clone())
        .collect()
}

/// Sends spans within a tenth of a second of their end.
const QUICK_BATCHES: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

#[test]
fn a_served_run_continues_the_callers_trace_down_to_its_outbound_requests() {
    let sandbox = Sandbox::new();
    let collector = Collector::start();
    let provider = Provider::start(&sandbox, "pay");
    // The notification fails (twice: it has one retry): the saga refunds
    // the charge, so both an invoke and a compensation make requests.
    provider.control(json!({"webhook_status": 500}));
    let dir = sandbox.path("served");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = checkout(&sandbox, &provider, &[]);
    std::fs::rename(&manifest, dir.join("checkout.toml")).unwrap();
    let server = Server::start_with_env(
        &sandbox,
        &[&dir],
        &["--otlp-endpoint", &collector.url()],
        &[("WASAGA_SECRET_PAY_KEY", KEY), QUICK_BATCHES],
    );
    let input: Value = serde_json::from_str(&cart("tok_visa")).unwrap();
    let mut response = server
        .agent()
        .post(&format!("{}/workflows/checkout/runs", server.base))
        .header("traceparent", &caller_traceparent())
        .send_json(json!({ "input": input }))
        .unwrap();
    let report: Value = response.body_mut().read_json().unwrap();
    assert_eq!(report["status"], "reverted", "{report:#}");
    assert_eq!(report["trace_id"], TRACE, "the report names the trace");
    let run_id = report["run"].as_str().unwrap().to_string();

    let spans = collector.wait_for("run checkout");
    assert!(spans.iter().all(|s| s.trace == TRACE), "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "wasaga"), "{spans:#?}");
    let run = one(&spans, "run checkout");
    assert_eq!(
        run.parent, CALLER,
        "the run is a child of the caller's span"
    );
    assert_eq!(run.code, 2, "a reverted run is an error");
    assert!(run.message.contains("notify-customer"), "{run:#?}");
    assert_eq!(run.attr("wasaga.run_id"), run_id);
    assert_eq!(run.attr("wasaga.status"), "reverted");

    // One span per attempt, each a child of the run's.
    let notify = named(&spans, "invoke notify-customer");
    assert_eq!(notify.len(), 2, "{spans:#?}");
    for attempt in &notify {
        assert_eq!(attempt.parent, run.id);
        assert_eq!(attempt.code, 2);
        assert_eq!(attempt.attr("wasaga.outcome"), "error");
        assert!(!attempt.attr("error.type").is_empty(), "{attempt:#?}");
    }
    let first = notify
        .iter()
        .find(|s| s.attr("wasaga.attempt") == "1")
        .unwrap();
    assert_eq!(first.attr("wasaga.retried"), "true");
    for name in [
        "invoke reserve-stock",
        "invoke charge-payment",
        "invoke create-order",
        "compensate create-order",
        "compensate charge-payment",
        "compensate reserve-stock",
    ] {
        let span = one(&spans, name);
        assert_eq!(span.parent, run.id, "{span:#?}");
        assert_eq!(span.kind, 1, "internal");
    }

    // Each outbound request is a client span under its attempt, and the
    // provider got that span as its parent.
    for (attempt, path, status) in [
        ("invoke charge-payment", "/v1/charges", "201"),
        ("compensate charge-payment", "/v1/refunds", "200"),
    ] {
        let parent = one(&spans, attempt);
        let request = spans
            .iter()
            .find(|s| s.parent == parent.id && s.attr("url.full").ends_with(path))
            .unwrap_or_else(|| panic!("no request span under '{attempt}': {spans:#?}"));
        assert_eq!(request.name, "POST");
        assert_eq!(request.kind, 3, "client");
        assert_eq!(request.attr("http.response.status_code"), status);
        assert_eq!(
            traceparents(&provider, path),
            vec![json!(format!("00-{TRACE}-{}-01", request.id))],
            "the provider's parent is the request's span"
        );
    }
    server.stop();
}

#[test]
fn a_run_resumed_after_a_crash_keeps_its_trace_and_host_run_flushes_on_exit() {
    let sandbox = Sandbox::new();
    let collector = Collector::start();
    let provider = Provider::start(&sandbox, "pay");
    let manifest = checkout(&sandbox, &provider, &[]);
    // The traced caller is a script (the environment carries its context);
    // the host dies once the charge's requests are noted.
    let status = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .env("WASAGA_CRASH_AT", "requests:charge-payment:invoke")
        .env("TRACEPARENT", caller_traceparent())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
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
    // Another process resumes it without any traceparent of its own: the
    // trace comes from the journal. Its spans are sent before it exits.
    let resumed = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
        .args(["resume", "--all"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let spans = collector.spans();
    let run = one(&spans, "run checkout");
    assert_eq!((run.trace.as_str(), run.parent.as_str()), (TRACE, CALLER));
    assert_eq!(run.code, 1, "done is ok");
    // The charge is called again (attempt 2, same trace), as are the steps after it.
    let charge = named(&spans, "invoke charge-payment");
    let again = charge
        .iter()
        .find(|s| s.attr("wasaga.attempt") == "2")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(again.trace, TRACE);
    assert_eq!(again.parent, run.id);
    one(&spans, "invoke notify-customer");
    let sent = traceparents(&provider, "/v1/charges");
    assert_eq!(sent.len(), 2, "sent by both processes: {sent:?}");
    assert!(
        sent.iter()
            .all(|t| t.as_str().unwrap().starts_with(&format!("00-{TRACE}-"))),
        "{sent:?}"
    );
    assert_ne!(
        sent[0], sent[1],
        "each attempt's request has a span of its own"
    );
}

#[test]
fn a_run_without_a_caller_starts_its_own_trace_and_a_bad_endpoint_is_refused() {
    let sandbox = Sandbox::new();
    let collector = Collector::start();
    let provider = Provider::start(&sandbox, "pay");
    let manifest = checkout(&sandbox, &provider, &[]);
    let manifest = manifest.to_str().unwrap();

    // No traces asked for: no context is passed on.
    let plain = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .args(["run", manifest, "--input", &cart("tok_visa"), "-q"])
        .output()
        .unwrap();
    assert!(plain.status.success());
    let plain: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain["trace_id"], Value::Null);
    assert_eq!(traceparents(&provider, "/v1/charges"), vec![Value::Null]);

    let traced = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .args(["run", manifest, "--input", &cart("tok_visa"), "-q"])
        .args(["--otlp-endpoint", &collector.url()])
        .output()
        .unwrap();
    assert!(
        traced.status.success(),
        "{}",
        String::from_utf8_lossy(&traced.stderr)
    );
    let report: Value = serde_json::from_slice(&traced.stdout).unwrap();
    let trace = report["trace_id"].as_str().expect("a trace of its own");
    let spans = collector.spans();
    let run = one(&spans, "run checkout");
    assert_eq!(run.trace, trace);
    assert_eq!(run.parent, "", "the run is its trace's root");
    assert_eq!(
        spans.len(),
        1 + 4 + 2,
        "the run, four invokes, two requests: {spans:#?}"
    );
    let sent = traceparents(&provider, "/v1/charges");
    assert!(
        sent[1]
            .as_str()
            .unwrap()
            .starts_with(&format!("00-{trace}-")),
        "{sent:?}"
    );

    for (flag, env, says) in [
        (Some("grpc://127.0.0.1:4317"), None, "--otlp-endpoint"),
        (
            None,
            Some(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")),
            "http/protobuf",
        ),
    ] {
        let mut command = sandbox.command();
        command.args(["run", manifest, "--input", &cart("tok_visa")]);
        if let Some(flag) = flag {
            command.args(["--otlp-endpoint", flag]);
        } else {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url());
        }
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let refused = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
