//! `GET /metrics`: what this server saw, in Prometheus' text format —
//! runs started and finished (by workflow and status), calls (by call,
//! action and outcome) with a histogram of their durations, lease
//! take-overs, commits to the state file — and the runs waiting, running
//! and compensating now (read from the journal at each scrape, so every
//! host of a database agrees).
//! It may not change runs: it only observes committed transitions.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::journal::{Journal, Observer, RecordKind};
use crate::saga::{Action, RunStatus};

/// Upper bounds (seconds) of the call-duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The most call starts remembered for their durations (a start whose end
/// never comes here, because its host died, is forgotten past it).
const OPEN_CALLS: usize = 100_000;

/// One call attempt: run, call, action, attempt.
type CallKey = (Arc<str>, String, Action, u32);

/// The counters of one server.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Runs started, by workflow.
    started: BTreeMap<String, u64>,
    /// Runs that reached a final status, by (workflow, status).
    finished: BTreeMap<(String, &'static str), u64>,
    /// Call attempts that ended, by (call, action, outcome).
    calls: BTreeMap<(String, &'static str, &'static str), u64>,
    /// Per action: bucket counts, the sum and the count of durations.
    durations: BTreeMap<&'static str, ([u64; BUCKETS.len()], f64, u64)>,
    /// When each call attempt in flight started.
    open: HashMap<CallKey, Instant>,
    /// The workflow of each run started or seen here, until it ends.
    workflows: HashMap<Arc<str>, String>,
}

impl Metrics {
    /// A run of `workflow` was started here.
    pub fn run_started(&self, run: &str, workflow: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state.started.entry(workflow.to_string()).or_default() += 1;
        // Runs that end on another host are never removed: bounded here.
        if state.workflows.len() >= OPEN_CALLS {
            state.workflows.clear();
        }
        state.workflows.insert(run.into(), workflow.to_string());
    }

    /// The text Prometheus scrapes: these counters, the host's take-overs,
    /// and the journal's unfinished runs by status.
    pub fn render(&self, journal: &dyn Journal, takeovers: u64) -> String {
        let mut out = String::new();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        family(
            &mut out,
            "wasaga_runs_started_total",
            "counter",
            "Runs started by this server.",
        );
        for (workflow, n) in &state.started {
            let _ = writeln!(
                out,
                "wasaga_runs_started_total{{workflow=\"{}\"}} {n}",
                escape(workflow)
            );
        }
        family(
            &mut out,
            "wasaga_runs_finished_total",
            "counter",
            "Runs this server saw end, by final status.",
        );
        for ((workflow, status), n) in &state.finished {
            let _ = writeln!(
                out,
                "wasaga_runs_finished_total{{workflow=\"{}\",status=\"{status}\"}} {n}",
                escape(workflow)
            );
        }
        family(
            &mut out,
            "wasaga_calls_total",
            "counter",
            "Call attempts this server made, by call, action and outcome.",
        );
        for ((call, action, outcome), n) in &state.calls {
            let _ = writeln!(
                out,
                "wasaga_calls_total{{call=\"{}\",action=\"{action}\",outcome=\"{outcome}\"}} {n}",
                escape(call)
            );
        }
        family(
            &mut out,
            "wasaga_call_duration_seconds",
            "histogram",
            "How long call attempts took, from their journaled start to their journaled end.",
        );
        for (action, (buckets, sum, count)) in &state.durations {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "wasaga_call_duration_seconds_bucket{{action=\"{action}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "wasaga_call_duration_seconds_bucket{{action=\"{action}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "wasaga_call_duration_seconds_sum{{action=\"{action}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "wasaga_call_duration_seconds_count{{action=\"{action}\"}} {count}"
            );
        }
        drop(state);
        family(
            &mut out,
            "wasaga_lease_takeovers_total",
            "counter",
            "Unfinished runs this server took over from hosts that died or stalled.",
        );
        let _ = writeln!(out, "wasaga_lease_takeovers_total {takeovers}");
        family(
            &mut out,
            "wasaga_state_commits_total",
            "counter",
            "Transactions this process committed to its SQLite state file, each shared by the writes of concurrent runs (with `full` durability, each an fsync); 0 on PostgreSQL.",
        );
        let _ = writeln!(
            out,
            "wasaga_state_commits_total {}",
            crate::journal::SqliteJournal::commits()
        );
        let (holds, held_seconds) = crate::journal::SqliteJournal::log_holds();
        family(
            &mut out,
            "wasaga_state_log_holds_total",
            "counter",
            &format!(
                "Times the state file's write-ahead log reached its hold line ({} MiB), past which this process's uses of the file wait for its restart (a disk too slow for the load); 0 on PostgreSQL.",
                crate::journal::LOG_HOLD_AT >> 20
            ),
        );
        let _ = writeln!(out, "wasaga_state_log_holds_total {holds}");
        family(
            &mut out,
            "wasaga_state_log_hold_seconds_total",
            "counter",
            "Seconds this process's uses of the state file waited at the write-ahead log's hold line, summed over the uses; 0 on PostgreSQL.",
        );
        let _ = writeln!(out, "wasaga_state_log_hold_seconds_total {held_seconds}");
        family(
            &mut out,
            "wasaga_runs",
            "gauge",
            "Unfinished runs in the journal, by status (all hosts).",
        );
        for status in [
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::Compensating,
            RunStatus::Queued,
        ] {
            match journal.count(status) {
                Ok(n) => {
                    let _ = writeln!(out, "wasaga_runs{{status=\"{}\"}} {n}", status.as_str());
                }
                Err(e) => tracing::warn!("metrics: cannot count {} runs: {e}", status.as_str()),
            }
        }
        out
    }

    fn workflow_of(&self, run: &str, journal: Option<&dyn Journal>) -> String {
        let known = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.workflows.get(run).cloned()
        };
        known
            .or_else(|| journal.and_then(|j| j.run(run).ok()).map(|r| r.workflow))
            .unwrap_or_default()
    }
}

/// Gives back the memory of a map that a burst of runs grew and that has
/// mostly emptied since (a map keeps its capacity otherwise).
fn shrink_when_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 8 {
        map.shrink_to(map.len() * 2);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// [`Metrics`] as an observer of a host's runs, with the journal it reads a
/// resumed run's workflow from.
pub struct Observed {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Where a run's workflow is looked up when it was not started here.
    pub journal: Arc<dyn Journal>,
}

impl Observer for Observed {
    fn committed(&self, run: &str, records: &[(u64, RecordKind)]) {
        let now = Instant::now();
        let mut state = self.metrics.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, record) in records {
            match record {
                RecordKind::Started {
                    node,
                    action,
                    attempt,
                    ..
                } => {
                    if state.open.len() >= OPEN_CALLS {
                        state.open.clear();
                    }
                    state
                        .open
                        .insert((run.into(), node.clone(), *action, *attempt), now);
                }
                RecordKind::Finished {
                    node,
                    action,
                    attempt,
                    record,
                } => {
                    let outcome = record.outcome_name();
                    // One series per call, not per for-each item.
                    let call = node.split('[').next().unwrap_or(node).to_string();
                    *state
                        .calls
                        .entry((call, action.as_str(), outcome))
                        .or_default() += 1;
                    let key = (Arc::<str>::from(run), node.clone(), *action, *attempt);
                    if let Some(started) = state.open.remove(&key) {
                        let seconds = now.duration_since(started).as_secs_f64();
                        let (buckets, sum, count) =
                            state.durations.entry(action.as_str()).or_default();
                        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
                            buckets[i] += 1;
                        }
                        *sum += seconds;
                        *count += 1;
                    }
                }
                _ => {}
            }
        }
    }

    fn status(&self, run: &str, status: RunStatus) {
        if status == RunStatus::Waiting {
            // A paused run holds nothing here until it ends (its workflow is
            // read back from the journal then): 100,000 runs waiting on
            // async steps kept 100,000 entries.
            let mut state = self.metrics.state.lock().unwrap_or_else(|e| e.into_inner());
            state.workflows.remove(run);
            shrink_when_sparse(&mut state.workflows);
            return;
        }
        if !status.is_final() {
            return;
        }
        let workflow = self.metrics.workflow_of(run, Some(self.journal.as_ref()));
        let mut state = self.metrics.state.lock().unwrap_or_else(|e| e.into_inner());
        state.workflows.remove(run);
        shrink_when_sparse(&mut state.workflows);
        *state
            .finished
            .entry((workflow, status.as_str()))
            .or_default() += 1;
    }
}
