//! `host serve` under load, as a client sees it: a real `host` process on a
//! loopback port and a state file, driven over HTTP/1.1 keep-alive
//! connections by a load generator in this process (one thread, like wrk
//! sharing the machine's cores with the server).
//!
//!     cargo bench -p wasaga-host --bench serve
//!
//! Two phases, each printed as it ends:
//! - `throughput`: `POST /workflows/create-brand/runs` (2 sandboxed steps,
//!   an entity written, every transition journaled) from
//!   `SERVE_BENCH_CONNECTIONS` connections (8) for `SERVE_BENCH_SECONDS`
//!   (15): runs/s, latency percentiles, non-200 answers, the largest the
//!   write-ahead log grew to (sampled every 50 ms), the state file's size
//!   per finished run and the server's RSS;
//! - `waiting`: `SERVE_BENCH_WAITING` (100,000) runs of a workflow whose
//!   first step is async, started with `?wait=false`; the server's RSS once
//!   they all wait; then each is answered (`POST
//!   /runs/{id}/steps/ask/success`), which must complete it (`done`).
//!
//! `SERVE_BENCH_PHASES=throughput` (or `waiting`) runs one phase;
//! `SERVE_BENCH_HOST=path/to/host` serves with another build of `host` (a
//! baseline copied aside before a change), for a comparison in one sitting.
//! `SERVE_BENCH_LATENCIES=file` writes the throughput phase's every request
//! (when sent, its latency) to `file`, to line slow answers up with the
//! server's log (`WASAGA_LOG=debug` names each restart of the log).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

mod common;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number")))
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let phases =
        std::env::var("SERVE_BENCH_PHASES").unwrap_or_else(|_| "throughput,waiting".into());
    let connections = env_number("SERVE_BENCH_CONNECTIONS", 8) as usize;
    let seconds = env_number("SERVE_BENCH_SECONDS", 15);
    let waiting = env_number("SERVE_BENCH_WAITING", 100_000) as usize;

    let dir = tempfile::tempdir().unwrap();
    let workflows = workflows(dir.path());
    let state = dir.path().join("state.db");
    let server = Server::start(&workflows, &state);
    println!(
        "host serve at {} (pid {}), state file {}",
        server.address,
        server.pid(),
        state.display()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if phases.contains("throughput") {
        rt.block_on(throughput(
            &server,
            &state,
            connections,
            Duration::from_secs(seconds),
        ));
    }
    if phases.contains("waiting") {
        rt.block_on(waiting_runs(&server, connections, waiting));
    }
}

/// The manifests served: create-brand as the example has it (with the
/// components built here), and `approval`, whose first step is async.
fn workflows(dir: &Path) -> PathBuf {
    let validate = common::guest("validate-brand");
    let create = common::guest("create-brand");
    let probe = common::guest("probe");
    let folder = dir.join("workflows");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("create-brand.toml"),
        format!(
            "[workflow]\nname = \"create-brand\"\n\
             [steps.validate-brand]\ncomponent = \"{}\"\n\
             [steps.create-brand]\ncomponent = \"{}\"\ngrants = {{ entities = [\"brand\"] }}\n\
             [[flow]]\nrun = \"validate-brand\"\ninput = \"input\"\n\
             [[flow]]\nrun = \"create-brand\"\ninput = \"input\"\nas = \"brand\"\n\
             [output]\nvalue = \"brand\"\n",
            validate.display(),
            create.display()
        ),
    )
    .unwrap();
    std::fs::write(
        folder.join("approval.toml"),
        format!(
            "[workflow]\nname = \"approval\"\n\
             [steps.ask]\ncomponent = \"{probe}\"\nasync = true\nconfig = {{ output = 1 }}\n\
             [steps.after]\ncomponent = \"{probe}\"\nconfig = {{ echo-input = true }}\n\
             [[flow]]\nrun = \"ask\"\nas = \"answer\"\n\
             [[flow]]\nrun = \"after\"\ninput = \"answer\"\nas = \"a\"\n\
             [output]\nvalue = \"a\"\n",
            probe = probe.display()
        ),
    )
    .unwrap();
    folder
}

/// A `host serve` child, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(workflows: &Path, state: &Path) -> Server {
        // `SERVE_BENCH_HOST=path/to/host` measures another build (a
        // baseline kept from before a change) with the same load.
        let host = std::env::var_os("SERVE_BENCH_HOST")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_host")), PathBuf::from);
        let mut child = Command::new(host)
            .arg("serve")
            .arg(workflows)
            .args(["--listen", "127.0.0.1:0", "-q", "--wait-timeout", "60s"])
            .env("WASAGA_STATE", state)
            .env(
                "WASAGA_CACHE_DIR",
                workflows.parent().unwrap().join("cache"),
            )
            .env_remove("WASAGA_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("no address: {line:?}"))
            .to_string();
        Server { child, address }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` and `VmHWM` (peak) of the server, in MB.
    fn rss_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the server.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(address: &str) -> Connection {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Connection {
            sender,
            host: address.to_string(),
        }
    }

    /// POSTs `body` to `path`: the status and the body.
    async fn post(&mut self, path: &str, body: String) -> (u16, Bytes) {
        self.sender.ready().await.unwrap();
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

/// Writes `timeline` (when each request was sent, and its latency) to
/// `path`, in the order sent: one `unix seconds.µs,latency µs` line each.
fn write_timeline(path: &Path, mut timeline: Vec<(std::time::SystemTime, u32)>) {
    timeline.sort_unstable();
    let mut text = String::new();
    for (sent, latency) in timeline {
        let since = sent.duration_since(std::time::UNIX_EPOCH).unwrap();
        let _ = writeln!(
            text,
            "{}.{:06},{latency}",
            since.as_secs(),
            since.subsec_micros()
        );
    }
    std::fs::write(path, text).unwrap();
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6)
}

async fn throughput(server: &Server, state: &Path, connections: usize, length: Duration) {
    let wal = PathBuf::from(format!("{}-wal", state.display()));
    let stop = Arc::new(AtomicBool::new(false));
    let largest_wal = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, largest, wal) = (stop.clone(), largest_wal.clone(), wal.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                largest.fetch_max(size, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // `SERVE_BENCH_LATENCIES=file`: every request's send time and latency,
    // to match a slow answer with the server's log (`WASAGA_LOG=debug`
    // names each restart of the write-ahead log and how long it stalled).
    let timeline_file = std::env::var_os("SERVE_BENCH_LATENCIES").map(PathBuf::from);
    let keep_timeline = timeline_file.is_some();
    let commits_before = metric(server, "wasaga_state_commits_total ").await;
    let started = Instant::now();
    let deadline = started + length;
    let counter = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (address, counter) = (server.address.clone(), counter.clone());
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(&address).await;
            let (mut latencies, mut failures) = (Vec::new(), 0usize);
            let mut timeline = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = format!(r#"{{"input": {{"name": "Brand {n}"}}}}"#);
                let sent = Instant::now();
                let sent_at = keep_timeline.then(std::time::SystemTime::now);
                let (status, _) = connection.post("/workflows/create-brand/runs", body).await;
                let latency = sent.elapsed().as_micros() as u32;
                latencies.push(latency);
                if let Some(sent_at) = sent_at {
                    timeline.push((sent_at, latency));
                }
                if status != 200 {
                    failures += 1;
                }
            }
            (latencies, failures, timeline)
        }));
    }
    let (mut latencies, mut failures, mut timeline) = (Vec::new(), 0, Vec::new());
    for client in clients {
        let (l, f, t) = client.await.unwrap();
        latencies.extend(l);
        failures += f;
        timeline.extend(t);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(path) = &timeline_file {
        write_timeline(path, timeline);
    }
    sampler.join().unwrap();
    let commits_after = metric(server, "wasaga_state_commits_total ").await;
    latencies.sort_unstable();
    let runs = latencies.len();
    let (rss, peak) = server.rss_mb();
    println!(
        "throughput: {connections} connections, {elapsed:.1} s: {runs} runs, {:.0} runs/s; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; non-200: {failures}",
        runs as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
    let finished = (runs - failures).max(1);
    // The state file's transactions per run (the server's counter: `n/a`
    // for a build that lacks it).
    let commits = match (commits_before, commits_after) {
        (Some(before), Some(after)) => {
            format!("{:.2}", (after - before) as f64 / runs.max(1) as f64)
        }
        _ => "n/a".into(),
    };
    println!(
        "throughput: {commits} commits per run; write-ahead log at most {:.1} MB (now {:.1} MB); state file {:.1} MB, {:.2} KB per finished run; server RSS {rss:.1} MB (peak {peak:.1} MB)",
        largest_wal.load(Ordering::Relaxed) as f64 / 1e6,
        file_mb(&wal),
        file_mb(state),
        file_mb(state) * 1e3 / finished as f64,
    );
}

/// Sends `count` POSTs over `connections` connections; `request(i)` gives
/// the i-th path and body, and each answer must have status `expect`.
/// Returns the answers' bodies in order.
async fn fan_out(
    address: &str,
    connections: usize,
    count: usize,
    request: Arc<dyn Fn(usize) -> (String, String) + Send + Sync>,
    expect: u16,
) -> Vec<Bytes> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (address, next, request) = (address.to_string(), next.clone(), request.clone());
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(&address).await;
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return answers;
                }
                let (path, body) = request(i);
                let (status, answer) = connection.post(&path, body).await;
                assert_eq!(
                    status,
                    expect,
                    "POST {path}: {}",
                    String::from_utf8_lossy(&answer)
                );
                answers.push((i, answer));
            }
        }));
    }
    let mut answers = vec![Bytes::new(); count];
    for client in clients {
        for (i, answer) in client.await.unwrap() {
            answers[i] = answer;
        }
    }
    answers
}

async fn waiting_runs(server: &Server, connections: usize, count: usize) {
    let (rss_before, _) = server.rss_mb();
    let started = Instant::now();
    let answers = fan_out(
        &server.address,
        connections,
        count,
        Arc::new(|_| {
            (
                "/workflows/approval/runs?wait=false".into(),
                r#"{"input": {}}"#.into(),
            )
        }),
        202,
    )
    .await;
    let ids: Arc<Vec<String>> = Arc::new(
        answers
            .iter()
            .map(|body| {
                let report: serde_json::Value = serde_json::from_slice(body).unwrap();
                report["run"].as_str().unwrap().to_string()
            })
            .collect(),
    );
    let posted = started.elapsed().as_secs_f64();
    // The last runs started may still be on their way to their wait.
    let settle = Instant::now();
    while waiting_count(server).await < count as u64 {
        assert!(
            settle.elapsed() < Duration::from_secs(120),
            "the runs did not all reach their wait"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rss, peak) = server.rss_mb();
    println!(
        "waiting: {count} runs started in {posted:.1} s ({:.0}/s), all waiting: server RSS {rss:.1} MB (before them {rss_before:.1} MB; peak {peak:.1} MB)",
        count as f64 / posted
    );
    let started = Instant::now();
    let answers = fan_out(
        &server.address,
        connections,
        count,
        Arc::new(move |i| {
            (
                format!("/runs/{}/steps/ask/success", ids[i]),
                r#"{"output": 1}"#.into(),
            )
        }),
        200,
    )
    .await;
    let done = answers
        .iter()
        .filter(|body| {
            let report: serde_json::Value = serde_json::from_slice(body).unwrap();
            report["status"] == "done"
        })
        .count();
    let answered = started.elapsed().as_secs_f64();
    let (rss, peak) = server.rss_mb();
    println!(
        "waiting: {count} answered in {answered:.1} s ({:.0}/s), {done} of them done; server RSS {rss:.1} MB (peak {peak:.1} MB)",
        count as f64 / answered
    );
    assert_eq!(done, count, "every answered run completes");
}

/// The runs the journal counts as waiting (the `/metrics` gauge).
async fn waiting_count(server: &Server) -> u64 {
    metric(server, "wasaga_runs{status=\"waiting\"} ")
        .await
        .unwrap_or(0)
}

/// The value of the `/metrics` line that starts with `prefix` (`None`: no
/// such line, as from a build before it was added).
async fn metric(server: &Server, prefix: &str) -> Option<u64> {
    let stream = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header("host", &server.address)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|n| n.trim().parse().ok())
}
