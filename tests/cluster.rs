//! Several `host serve` processes on one state: 300 runs (sequential,
//! parallel, compensating and async workflows of real brand components)
//! spread over three hosts while one host is SIGKILLed and, on PostgreSQL,
//! another SIGSTOPped for longer than its lease. At the end every run is in
//! its intended final state, the entity rows are exactly those of the runs
//! that finished, no call whose end was journaled ran again, no
//! compensation was lost or doubled, and the dead and the paused host's
//! runs were taken over within lease + poll time (measured, printed).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::Sandbox;
use common::server::Server;
use serde_json::{Value, json};
use wasaga_host::postgres::testing::TestSchema;

/// The lease the hosts of the test hold (short, so the test is quick; the
/// default is 10 s).
const LEASE: Duration = Duration::from_secs(2);
/// The sweep's poll (at most; `host serve`'s is 1 s with jitter).
const POLL: Duration = Duration::from_secs(1);

/// The state the hosts share.
enum Shared {
    Sqlite(std::path::PathBuf),
    Postgres(TestSchema),
}

impl Shared {
    fn location(&self) -> String {
        match self {
            Shared::Sqlite(path) => path.display().to_string(),
            Shared::Postgres(schema) => schema.url.clone(),
        }
    }

    fn reader(&self) -> Reader {
        match self {
            Shared::Sqlite(path) => Reader::Sqlite(path.clone()),
            Shared::Postgres(schema) => Reader::Postgres(schema.url.clone()),
        }
    }

    fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.reader().query(sql)
    }
}

/// Reads the shared state the way the test needs it (from any thread).
enum Reader {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Reader {
    /// Rows of `sql` (no parameters), each column as text (NULL as None).
    fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Reader::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(30)).unwrap();
                let mut statement = conn.prepare(sql).unwrap();
                let columns = statement.column_count();
                statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|i| {
                                let value: rusqlite::types::Value = row.get(i)?;
                                Ok(match value {
                                    rusqlite::types::Value::Null => None,
                                    rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                                    rusqlite::types::Value::Real(r) => Some(r.to_string()),
                                    rusqlite::types::Value::Text(t) => Some(t),
                                    rusqlite::types::Value::Blob(_) => Some("<blob>".into()),
                                })
                            })
                            .collect()
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Reader::Postgres(url) => {
                let url = url.clone();
                let sql = sql.to_string();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        let (client, connection) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                                .await
                                .unwrap();
                        tokio::spawn(connection);
                        // The simple protocol answers every column as text.
                        let messages = client.simple_query(&sql).await.unwrap();
                        messages
                            .into_iter()
                            .filter_map(|m| match m {
                                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                                    (0..row.len())
                                        .map(|i| row.get(i).map(str::to_string))
                                        .collect(),
                                ),
                                _ => None,
                            })
                            .collect()
                    })
                })
                .join()
                .unwrap()
            }
        }
    }
}

/// The workflows of the test: brand components with a pause between steps,
/// so a kill lands while runs are in flight.
fn workflows(sandbox: &Sandbox) -> std::path::PathBuf {
    let dir = sandbox.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    let steps = "
[steps.create-brand]
component = \"{create-brand}\"
grants = { entities = [\"brand\"] }
[steps.create-products]
component = \"{create-products}\"
grants = { entities = [\"product\"] }
[steps.create-collections]
component = \"{create-collections}\"
grants = { entities = [\"collection\"] }
[steps.validate-brand]
component = \"{validate-brand}\"
config = { min-length = 100 }
[steps.pause]
component = \"{probe}\"
config = { sleep-ms = 150, output = 1 }
[steps.ask]
component = \"{probe}\"
async = true
config = { output = 1 }
";
    let brand = "[[flow]]\nrun = \"create-brand\"\ninput = \"input.brand\"\nas = \"brand\"\n[[flow]]\nrun = \"pause\"\n";
    let products = "[[flow]]\nrun = \"create-products\"\ninput = \"{'brand_id': brand.id, 'items': input.products}\"\nas = \"products\"\n";
    let files = [
        ("seq", format!("{brand}{products}")),
        (
            "par",
            format!(
                "{brand}[[flow]]\nparallel = [\n  {{ run = \"create-products\", input = \"{{'brand_id': brand.id, 'items': input.products}}\", as = \"products\" }},\n  {{ run = \"create-collections\", input = \"{{'brand_id': brand.id, 'items': input.collections}}\", as = \"collections\" }},\n]\n"
            ),
        ),
        (
            "comp",
            format!("{brand}{products}[[flow]]\nrun = \"validate-brand\"\ninput = \"brand\"\n"),
        ),
        (
            "async",
            format!("{brand}[[flow]]\nrun = \"ask\"\n{products}"),
        ),
    ];
    for (name, flow) in files {
        let mut text = format!("[workflow]\nname = \"{name}\"\n{steps}{flow}");
        for component in [
            "create-brand",
            "create-products",
            "create-collections",
            "validate-brand",
            "probe",
        ] {
            text = text.replace(
                &format!("{{{component}}}"),
                &common::component(component).display().to_string(),
            );
        }
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

fn final_status(status: &str) -> bool {
    ["done", "reverted", "failed", "cancelled"].contains(&status)
}

/// The host's pid in the lease owners it writes (`<hostname>:<pid>:<start>`).
fn held_by(shared: &Shared, pid: u32) -> Vec<String> {
    shared
        .query(&format!(
            "SELECT id FROM runs WHERE lease_owner LIKE '%:{pid}:%' AND status IN ('running', 'compensating')"
        ))
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
}

/// How long until none of `runs` is held by `pid` any more (or `limit`).
fn taken_over(shared: &Shared, runs: &[String], pid: u32, since: Instant) -> Option<Duration> {
    if runs.is_empty() {
        return Some(Duration::ZERO);
    }
    let still: Vec<String> = held_by(shared, pid);
    runs.iter()
        .all(|run| !still.contains(run))
        .then(|| since.elapsed())
}

/// Whether every one of `runs` is final.
fn all_final(shared: &Shared, runs: &[String]) -> bool {
    if runs.is_empty() {
        return true;
    }
    let list = runs
        .iter()
        .map(|run| format!("'{run}'"))
        .collect::<Vec<_>>()
        .join(", ");
    shared
        .query(&format!("SELECT status FROM runs WHERE id IN ({list})"))
        .iter()
        .all(|row| final_status(row[0].as_deref().unwrap()))
}

/// `machines`: each host under a node name of its own (as on three
/// machines: only leases count), or all on this one (a dead pid is seen).
fn cluster(shared: Shared, pause_one: bool, machines: bool) {
    let sandbox = Sandbox::new();
    let dir = workflows(&sandbox);
    let location = shared.location();
    let lease = format!("{}ms", LEASE.as_millis());
    let extra = ["--state", location.as_str(), "--lease", lease.as_str()];
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let node = format!("node-{i}");
            let env: &[(&str, &str)] = if machines {
                &[("WASAGA_NODE_NAME", node.as_str())]
            } else {
                &[]
            };
            Server::start_with_env(&sandbox, &[dir.as_path()], &extra, env)
        })
        .collect();
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let mut alive = [true, true, true];
    let kinds = [
        "seq", "par", "comp", "seq", "par", "comp", "seq", "par", "async", "seq",
    ];
    let mut runs: Vec<(String, &str, usize)> = Vec::new();
    let post = |i: usize, alive: &[bool; 3], runs: &mut Vec<(String, &str, usize)>| {
        let kind = kinds[i % kinds.len()];
        let input = json!({
            "brand": {"name": format!("Brand {i}")},
            "products": [{"title": format!("P{i}a")}, {"title": format!("P{i}b")}],
            "collections": [{"title": format!("C{i}")}],
        });
        let live: Vec<usize> = (0..3).filter(|s| alive[*s]).collect();
        let server = &servers[live[i % live.len()]];
        let (status, body, _) = server.post(
            &format!("/workflows/{kind}/runs?wait=false"),
            json!({"input": input}),
        );
        assert_eq!(status, 202, "{body}");
        runs.push((body["run"].as_str().unwrap().to_string(), kind, i));
    };
    for i in 0..100 {
        post(i, &alive, &mut runs);
    }
    // Host 0 dies mid-load.
    std::thread::sleep(Duration::from_millis(100));
    let killed_at = Instant::now();
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    alive[0] = false;
    let killed_runs = held_by(&shared, pids[0]);
    for i in 100..200 {
        post(i, &alive, &mut runs);
    }
    // Host 1 stops (as a paused VM, a partitioned or starved process
    // would) for three leases.
    let mut stopped: Option<(Instant, Vec<String>)> = None;
    if pause_one {
        std::thread::sleep(Duration::from_millis(100));
        unsafe { libc::kill(pids[1] as i32, libc::SIGSTOP) };
        alive[1] = false;
        stopped = Some((Instant::now(), held_by(&shared, pids[1])));
    }
    for i in 200..300 {
        post(i, &alive, &mut runs);
    }
    let mut killed_takeover = None;
    let mut killed_finished = None;
    let mut stopped_takeover = None;
    let mut continued = !pause_one;
    let deadline = Instant::now() + Duration::from_secs(120);
    // The async runs that wait are answered through host 2 (up
    // throughout), off this thread: an answer returns when its run ends.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answerer = {
        let (done, base, shared) = (done.clone(), servers[2].base.clone(), shared.reader());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut answered: Vec<String> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for row in shared.query("SELECT id FROM runs WHERE status = 'waiting'") {
                    let run = row[0].clone().unwrap();
                    if answered.contains(&run) {
                        continue;
                    }
                    let response = agent
                        .post(&format!("{base}/runs/{run}/steps/ask/success"))
                        .send_json(json!({"output": {"approved": true}}))
                        .unwrap();
                    let status = response.status().as_u16();
                    if status < 300 {
                        answered.push(run);
                    } else {
                        // Being resumed elsewhere right now: answered later.
                        assert_eq!(status, 409);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            answered.len()
        })
    };
    loop {
        assert!(Instant::now() < deadline, "the runs did not finish in time");
        if killed_takeover.is_none() {
            killed_takeover = taken_over(&shared, &killed_runs, pids[0], killed_at);
        }
        if killed_finished.is_none() && all_final(&shared, &killed_runs) {
            killed_finished = Some(killed_at.elapsed());
        }
        if let Some((at, held)) = &stopped
            && stopped_takeover.is_none()
        {
            stopped_takeover = taken_over(&shared, held, pids[1], *at);
        }
        if let Some((at, _)) = &stopped
            && !continued
            && at.elapsed() >= LEASE * 3
        {
            unsafe { libc::kill(pids[1] as i32, libc::SIGCONT) };
            continued = true;
        }
        let unfinished = shared
            .query("SELECT status FROM runs")
            .iter()
            .filter(|row| !final_status(row[0].as_deref().unwrap()))
            .count();
        if unfinished == 0 && continued && (stopped.is_none() || stopped_takeover.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        answerer.join().unwrap(),
        30,
        "every async run was answered once"
    );
    let killed_takeover = killed_takeover.expect("the killed host's runs were taken over");
    let (bound, how) = if machines {
        (LEASE + POLL, "after its lease")
    } else {
        (POLL, "at once: its pid is gone")
    };
    eprintln!(
        "killed host: {} runs in flight taken over within {killed_takeover:?} ({how}; lease {LEASE:?}, poll {POLL:?}), all finished within {:?}",
        killed_runs.len(),
        killed_finished.unwrap_or_else(|| killed_at.elapsed()),
    );
    assert!(!killed_runs.is_empty(), "the kill caught runs in flight");
    assert!(
        killed_takeover <= bound + Duration::from_secs(2),
        "{killed_takeover:?}"
    );
    if let Some((_, held)) = &stopped {
        let took = stopped_takeover.unwrap();
        eprintln!(
            "stopped host: {} runs in flight taken over within {took:?} (lease {LEASE:?} + poll {POLL:?})",
            held.len()
        );
        assert!(!held.is_empty(), "the stop caught runs in flight");
        assert!(
            took >= LEASE / 4,
            "a live host's runs wait for its lease: {took:?}"
        );
        assert!(took <= LEASE + POLL + Duration::from_secs(2), "{took:?}");
    }

    // Every run in its intended final state.
    let statuses: HashMap<String, String> = shared
        .query("SELECT id, status FROM runs")
        .into_iter()
        .map(|row| (row[0].clone().unwrap(), row[1].clone().unwrap()))
        .collect();
    assert_eq!(statuses.len(), 300);
    for (run, kind, i) in &runs {
        let expected = if *kind == "comp" { "reverted" } else { "done" };
        assert_eq!(statuses[run], expected, "run {i} ({kind}) {run}");
    }

    // The entity rows are exactly those of the finished runs.
    let names = |collection: &str, field: &str| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for row in shared.query(&format!(
            "SELECT data FROM entities WHERE collection = '{collection}'"
        )) {
            let data: Value = serde_json::from_str(row[0].as_deref().unwrap()).unwrap();
            *counts
                .entry(data[field].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        counts
    };
    let (brands, products, collections) = (
        names("brand", "name"),
        names("product", "title"),
        names("collection", "title"),
    );
    let mut want_brands = BTreeMap::new();
    let mut want_products = BTreeMap::new();
    let mut want_collections = BTreeMap::new();
    for (_, kind, i) in &runs {
        if *kind == "comp" {
            continue;
        }
        want_brands.insert(format!("Brand {i}"), 1);
        want_products.insert(format!("P{i}a"), 1);
        want_products.insert(format!("P{i}b"), 1);
        if *kind == "par" {
            want_collections.insert(format!("C{i}"), 1);
        }
    }
    assert_eq!(brands, want_brands);
    assert_eq!(products, want_products);
    assert_eq!(collections, want_collections);

    // No call whose end was journaled started again, and every call (and
    // compensation) settled once.
    let records = shared.query(
        "SELECT run, kind, node, action, body FROM records WHERE kind IN ('started', 'finished') ORDER BY run, seq",
    );
    let mut settled: HashMap<(String, String, String), usize> = HashMap::new();
    let mut ended: HashMap<(String, String, String), bool> = HashMap::new();
    for row in records {
        let key = (
            row[0].clone().unwrap(),
            row[2].clone().unwrap(),
            row[3].clone().unwrap(),
        );
        match row[1].as_deref().unwrap() {
            "started" => assert!(
                !ended.get(&key).copied().unwrap_or(false),
                "{key:?} started again after its end was journaled"
            ),
            _ => {
                let outcome: Value = serde_json::from_str(row[4].as_deref().unwrap()).unwrap();
                let outcome = outcome["outcome"].as_str().unwrap_or("").to_string();
                if ["done", "compensated", "waiting", "skipped"].contains(&outcome.as_str()) {
                    ended.insert(key.clone(), true);
                }
                if outcome == "done" || outcome == "compensated" {
                    *settled.entry(key).or_insert(0) += 1;
                }
            }
        }
    }
    for (key, count) in &settled {
        assert_eq!(*count, 1, "{key:?} settled {count} times");
    }
    for (run, kind, _) in &runs {
        let once = |node: &str, action: &str| {
            settled
                .get(&(run.clone(), node.to_string(), action.to_string()))
                .copied()
                .unwrap_or(0)
        };
        if *kind == "comp" {
            assert_eq!(once("create-brand", "compensate"), 1, "{run}");
            assert_eq!(once("create-products", "compensate"), 1, "{run}");
        } else {
            assert_eq!(once("create-products", "invoke"), 1, "{run}");
        }
    }
    for server in servers {
        drop(server);
    }
}

#[test]
fn three_hosts_on_postgresql_survive_a_killed_and_a_paused_host() {
    cluster(Shared::Postgres(TestSchema::new()), true, true);
}

#[test]
fn three_hosts_on_one_sqlite_file_take_over_a_killed_hosts_runs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    cluster(Shared::Sqlite(path), false, false);
}
