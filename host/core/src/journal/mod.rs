//! The durable execution record: runs, their transitions (call attempts,
//! events), the manifests they were started with, and leases (which host
//! process is executing a run). Behind the [`Journal`] trait, implemented by
//! the host's storage backends (SQLite, in the state file, is the embedded
//! default).
//!
//! It may not run steps: the orchestrator writes through a
//! [`JournalRecorder`], and `durable` drives runs.

mod owner;
mod recorder;
mod report;
mod run_decoder;
mod turn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use owner::Owner;
pub use recorder::{CrashPoint, JournalRecorder, LeaseKeeper};
pub use report::report_from_journal;
pub use run_decoder::{RunDecoder, StartedByReference};

use crate::json::Json;
use crate::saga::{
    Action, CallRecord, Event, History, OutboundRequest, RunError, RunReport, RunStatus,
};

/// A journal failure.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage failed.
    #[error("journal: {0}")]
    Storage(String),
    /// No run has this id.
    #[error("no run '{0}' in this state file")]
    UnknownRun(String),
    /// Another host took the run over: its lease epoch moved on, so this
    /// write was not applied (nor will any later one of this host be).
    #[error(
        "this host lost its lease on run {0}: another host took the run over (this one was paused, cut off or too slow to renew), so it writes nothing more to it"
    )]
    LeaseLost(String),
}

/// What starting a run needs.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The run's id.
    pub id: String,
    /// Its transaction id.
    pub transaction_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The top manifest file.
    pub manifest: PathBuf,
    /// Every file the manifest was resolved from, pinned with the run.
    pub sources: Vec<(PathBuf, String)>,
    /// Extension folders it was loaded with.
    pub extension_dirs: Vec<PathBuf>,
    /// The input.
    pub input: Json,
    /// The metadata.
    pub metadata: Json,
    /// A finished run with this transaction id returns its result (no new run).
    pub idempotent: bool,
    /// The content hash of each step's component, pinned with the run.
    pub components: Vec<PinnedComponent>,
    /// The run this one runs again (`host runs rerun`).
    pub rerun_of: Option<String>,
    /// The schedule's tick it was started for (unix ms).
    pub tick: Option<i64>,
    /// Its workflow's `concurrency`: the run waits `queued` while as many
    /// runs of its key execute as the limit allows.
    pub queue: Option<Queue>,
    /// The trace its spans belong to (the caller's `traceparent`, or a root
    /// when this host exports traces); kept so a resume continues the trace.
    pub trace_context: Option<crate::telemetry::TraceContext>,
}

/// Where a workflow's schedule stands (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleState {
    /// Every tick up to this one was handled (run, dropped or collapsed).
    pub last_tick: i64,
    /// A tick a host decided to run and may not have recorded the run of
    /// yet (it may have died in between): the next look records it.
    pub pending_tick: Option<i64>,
}

/// Where a run of a workflow with `concurrency` queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Its key (the workflow's runs share one when the manifest gives none).
    pub key: String,
    /// How many runs of the key execute at once.
    pub limit: u32,
    /// Higher first; equal ones oldest first.
    pub priority: i64,
}

/// A step's component as a run started with it: a resume that finds other
/// bytes at the path refuses (new code over a half-finished saga) unless
/// the operator accepts the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedComponent {
    /// The step (its declared name).
    pub step: String,
    /// The component's file.
    pub path: PathBuf,
    /// blake3 of its bytes.
    pub hash: String,
}

/// How a start went.
#[derive(Debug)]
pub enum Begin {
    /// A new run was recorded, leased to the starter under this epoch.
    Started {
        /// The lease epoch its writes are fenced on.
        epoch: u64,
    },
    /// A run with this transaction id exists.
    Existing(Box<RunRecord>),
    /// A new run was recorded `queued`: its key is at its limit (or others
    /// queue before it). It holds no lease.
    Queued,
}

/// A run as the journal holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Its id.
    pub id: String,
    /// Its transaction id.
    pub transaction_id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The top manifest file.
    pub manifest: PathBuf,
    /// The hash of its pinned sources.
    pub manifest_hash: String,
    /// The components it started with (empty for runs journaled before
    /// components were pinned).
    #[serde(default)]
    pub components: Vec<PinnedComponent>,
    /// Extension folders it was loaded with.
    pub extension_dirs: Vec<PathBuf>,
    /// The input.
    pub input: Json,
    /// The metadata.
    pub metadata: Json,
    /// Where it is.
    pub status: RunStatus,
    /// Done, with failures a policy let pass.
    pub partial: bool,
    /// The output, when done.
    pub output: Option<Json>,
    /// The error, when not done.
    pub error: Option<RunError>,
    /// Failures that did not stop it.
    pub errors: Vec<RunError>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms, once final.
    pub finished_at: Option<i64>,
    /// Which process executes it, if any.
    pub lease_owner: Option<String>,
    /// Until when (unix ms).
    pub lease_until: Option<i64>,
    /// How many times its lease was claimed: every write of the executing
    /// host is conditional on the epoch it claimed.
    #[serde(default)]
    pub lease_epoch: u64,
    /// Someone asked to cancel it.
    pub cancel_requested: bool,
    /// When a waiting run wakes (unix ms): a sleep ends or an async step's
    /// answer is due.
    #[serde(default)]
    pub wake_at: Option<i64>,
    /// The run this one runs again (`host runs rerun`).
    #[serde(default)]
    pub rerun_of: Option<String>,
    /// How many times it was taken over from a host that died (or stalled)
    /// while executing it: past a limit it is parked as `failed`.
    #[serde(default)]
    pub crashes: u32,
    /// The schedule's tick it was started for (unix ms).
    #[serde(default)]
    pub tick: Option<i64>,
    /// Its concurrency key, when its workflow has `concurrency`.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// Its trace context as stored ([`crate::telemetry::TraceContext::to_stored`]).
    #[serde(default)]
    pub traceparent: Option<String>,
}

impl RunRecord {
    /// The trace its spans belong to, if it has one.
    pub fn trace_context(&self) -> Option<crate::telemetry::TraceContext> {
        self.traceparent
            .as_deref()
            .and_then(crate::telemetry::TraceContext::from_stored)
    }

    /// Whether a live process other than `me` holds the run.
    pub fn held_by_other(&self, me: &Owner, now_ms: i64) -> bool {
        match (&self.lease_owner, self.lease_until) {
            (Some(owner), Some(until)) if owner != me.id() => {
                until > now_ms && Owner::is_alive(owner)
            }
            _ => false,
        }
    }
}

/// One transition of a run, as stored.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its place in the run's history.
    pub seq: u64,
    /// Unix µs.
    pub at: i64,
    /// What happened.
    pub kind: RecordKind,
}

/// What a record says.
#[derive(Debug, Clone)]
pub enum RecordKind {
    /// A call attempt started.
    Started {
        /// The call.
        node: String,
        /// The declared step's name.
        step: String,
        /// Invoke or compensate.
        action: Action,
        /// From 1.
        attempt: u32,
        /// Its input (or compensation data).
        input: Option<Json>,
    },
    /// A call attempt finished.
    Finished {
        /// The call.
        node: String,
        /// Invoke or compensate.
        action: Action,
        /// From 1.
        attempt: u32,
        /// The outcome.
        record: CallRecord,
    },
    /// The outbound requests of a call attempt (written just before its
    /// `Finished`, only when it made some).
    Requests {
        /// The call.
        node: String,
        /// Invoke or compensate.
        action: Action,
        /// From 1.
        attempt: u32,
        /// The requests, in order.
        requests: Vec<OutboundRequest>,
    },
    /// An event was emitted.
    Event(Event),
    /// The forward pass failed; compensation started.
    Compensating(RunError),
    /// An operator asked to retry the compensations that failed (`host
    /// runs retry`): those recorded before this are called again.
    Retry {
        /// The calls whose compensation is retried.
        compensations: Vec<String>,
    },
}

impl RecordKind {
    /// A record from the columns every journal stores it in: its kind's
    /// name, the call it belongs to (node, action, attempt) and its JSON
    /// body. What a resume reads back, so a damaged row is an error, never a
    /// panic or a value that breaks a later read.
    ///
    /// A *started* record whose input was stored as a reference to an
    /// earlier call's output (see [`RunDecoder`]) is damaged when read on
    /// its own: decode a run's records with a [`RunDecoder`].
    pub fn decode(
        kind: &str,
        node: Option<String>,
        action: Option<&str>,
        attempt: Option<u32>,
        body: &str,
    ) -> Result<RecordKind, String> {
        RecordKind::decode_in_run(kind, node, action, attempt, body, |_| None)
    }

    /// [`RecordKind::decode`], with `output_of` giving the output of the
    /// run's earlier record `seq` (a finished call) for an input stored as
    /// a reference to it.
    fn decode_in_run(
        kind: &str,
        node: Option<String>,
        action: Option<&str>,
        attempt: Option<u32>,
        body: &str,
        output_of: impl Fn(u64) -> Option<Json>,
    ) -> Result<RecordKind, String> {
        #[derive(serde::Deserialize)]
        struct StartedBody {
            step: Option<String>,
            input: Option<Box<serde_json::value::RawValue>>,
            /// The input is the output of this earlier record of the run.
            input_of: Option<u64>,
        }
        let action = action.and_then(Action::from_name).unwrap_or(Action::Invoke);
        let node = node.unwrap_or_default();
        let attempt = attempt.unwrap_or(1);
        let bad = |e: serde_json::Error| format!("a damaged '{kind}' record: {e}");
        Ok(match kind {
            "started" => {
                let started: StartedBody = serde_json::from_str(body).map_err(bad)?;
                let input = match (started.input_of, started.input) {
                    (Some(seq), _) => Some(output_of(seq).ok_or_else(|| {
                        format!(
                            "a damaged 'started' record: its input is the output of record {seq}, which is not an earlier finished call of the run"
                        )
                    })?),
                    (None, Some(raw)) if raw.get() != "null" => {
                        Some(Json::parse(raw.get().to_string()).map_err(bad)?)
                    }
                    _ => None,
                };
                RecordKind::Started {
                    step: started.step.unwrap_or_else(|| node.clone()),
                    input,
                    node,
                    action,
                    attempt,
                }
            }
            "finished" => RecordKind::Finished {
                node,
                action,
                attempt,
                record: finished_record(body).map_err(bad)?,
            },
            "requests" => RecordKind::Requests {
                node,
                action,
                attempt,
                requests: serde_json::from_str(body).map_err(bad)?,
            },
            "event" => RecordKind::Event(serde_json::from_str(body).map_err(bad)?),
            "compensating" => RecordKind::Compensating(serde_json::from_str(body).map_err(bad)?),
            "retry" => {
                #[derive(serde::Deserialize)]
                struct RetryBody {
                    compensations: Vec<String>,
                }
                let retry: RetryBody = serde_json::from_str(body).map_err(bad)?;
                RecordKind::Retry {
                    compensations: retry.compensations,
                }
            }
            other => return Err(format!("unknown record kind '{other}'")),
        })
    }
}

/// A finished record's body. A step's output (and compensation data) is
/// kept as the text it was written with: `CallRecord` is an internally
/// tagged enum, which serde reads through a buffer of `Value`s, and that
/// sorts object keys and rounds integers past 64 bits. The outcomes that
/// carry a step's JSON are read here; the others through serde.
fn finished_record(body: &str) -> Result<CallRecord, serde_json::Error> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Carrying<'a> {
        #[serde(borrow)]
        outcome: std::borrow::Cow<'a, str>,
        #[serde(default, deserialize_with = "present")]
        output: Option<Box<RawValue>>,
        #[serde(default, deserialize_with = "present")]
        compensation: Option<Box<RawValue>>,
        until: Option<i64>,
    }
    /// A field that is there, `null` included (a plain `Option` reads
    /// `null` as absent, and `null` is an output a step may return).
    fn present<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Box<RawValue>>, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Some)
    }
    let raw_json = |raw: Box<RawValue>| Json::parse(String::from(Box::<str>::from(raw)));
    let carrying: Carrying = serde_json::from_str(body)?;
    let missing = || serde::de::Error::missing_field("output");
    match &*carrying.outcome {
        "done" => Ok(CallRecord::Done {
            output: raw_json(carrying.output.ok_or_else(missing)?)?,
            // `null` is no compensation data, as serde reads an `Option`.
            compensation: match carrying.compensation {
                Some(raw) if raw.get() != "null" => Some(raw_json(raw)?),
                _ => None,
            },
        }),
        "waiting" => Ok(CallRecord::Waiting {
            output: raw_json(carrying.output.ok_or_else(missing)?)?,
            until: carrying.until,
        }),
        _ => serde_json::from_str(body),
    }
}

/// Told about every transition once it is committed (live views of runs).
pub trait Observer: Send + Sync {
    /// Records of `run` were committed.
    fn committed(&self, run: &str, records: &[(u64, RecordKind)]);
    /// `run` reached `status` (it ended, paused, or started compensating).
    fn status(&self, run: &str, status: RunStatus);
}

/// Several observers as one (the live event streams, the metrics, the
/// trace exporter), told in order.
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn committed(&self, run: &str, records: &[(u64, RecordKind)]) {
        for observer in &self.0 {
            observer.committed(run, records);
        }
    }

    fn status(&self, run: &str, status: RunStatus) {
        for observer in &self.0 {
            observer.status(run, status);
        }
    }
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<usize>,
    /// Only runs created before this one (for paging).
    pub before: Option<String>,
    /// Only the reruns of this run.
    pub rerun_of: Option<String>,
}

/// A queued write under way (see [`Journal::append_queued`]): whether a
/// cancel was requested, once committed.
pub type Appending<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, JournalError>> + Send + 'a>>;

/// A queued start under way (see [`Journal::begin_queued`]).
pub type Beginning<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Begin, JournalError>> + Send + 'a>>;

/// The durable record of runs.
///
/// Every write made while executing a run (`append`, `set_status`,
/// `set_components`, `finish`) carries the lease epoch its host claimed and
/// is applied only while the run's epoch is still that one, in the same
/// statement or transaction; otherwise it fails with
/// [`JournalError::LeaseLost`] and changes nothing.
pub trait Journal: Send + Sync {
    /// Records a new run leased to `owner` (epoch 1), unless a run with its
    /// transaction id exists (atomically: two concurrent starts create one run).
    fn begin(&self, run: &NewRun, owner: &Owner, lease: Duration) -> Result<Begin, JournalError>;
    /// [`Journal::begin`], for a caller that waits as a task: the start is
    /// queued before this returns, and the future answers once it is
    /// committed (see [`Journal::append_queued`]). By default the
    /// synchronous start, made at once.
    ///
    /// Not cancel-safe: a future dropped once its start is on its way (in
    /// a commit under way, or sent to the database) may still record the
    /// run, leased to the caller, which then never hears of it; it is
    /// taken over when its lease runs out, as if the caller had died. A
    /// caller that may drop it starts it in a task of its own.
    fn begin_queued(&self, run: &NewRun, owner: &Owner, lease: Duration) -> Beginning<'_> {
        let begun = self.begin(run, owner, lease);
        Box::pin(std::future::ready(begun))
    }
    /// Appends transitions (with the sequence numbers the run's recorder
    /// gave them) in one transaction; returns whether someone asked to
    /// cancel the run (read in the same transaction).
    fn append(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> Result<bool, JournalError>;
    /// [`Journal::append`], for a caller that waits as a task: the write
    /// is queued before this returns (so that writes queued one after the
    /// other commit in that order), and the future completes once it is
    /// committed. A backend that shares commits between runs waits for its
    /// turn there without holding a thread. By default the synchronous
    /// append, made at once.
    fn append_queued(&self, run: &str, epoch: u64, records: &[(u64, RecordKind)]) -> Appending<'_> {
        let appended = self.append(run, epoch, records);
        Box::pin(std::future::ready(appended))
    }
    /// Sets a run's status (and refreshes `updated_at`).
    fn set_status(&self, run: &str, epoch: u64, status: RunStatus) -> Result<(), JournalError>;
    /// Replaces the components a run is pinned to (an operator accepted
    /// changed components).
    fn set_components(
        &self,
        run: &str,
        epoch: u64,
        components: &[PinnedComponent],
    ) -> Result<(), JournalError>;
    /// Records how a run ended (or paused) and releases its lease.
    fn finish(&self, run: &str, epoch: u64, report: &RunReport) -> Result<(), JournalError>;
    /// Appends a run's last `records` and records its end: in one
    /// transaction where the backend can (both of ours), so that a
    /// run's end costs one commit, not two; else one after the other.
    fn finish_with(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        report: &RunReport,
    ) -> Result<(), JournalError> {
        if !records.is_empty() {
            self.append(run, epoch, records)?;
        }
        self.finish(run, epoch, report)
    }
    /// [`Journal::finish_with`], for a caller that waits as a task (see
    /// [`Journal::append_queued`]). By default the synchronous one.
    fn finish_queued(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        report: &RunReport,
    ) -> Appending<'_> {
        let finished = self.finish_with(run, epoch, records, report);
        Box::pin(std::future::ready(finished.map(|()| false)))
    }
    /// Reopens a finished run: a `done` run for its compensation (a cancel
    /// after the end), a `failed` one to retry the compensations that
    /// failed, or a parked one to continue it. Its status becomes `to`,
    /// leased to `owner` in the same statement (so no sweep takes it in
    /// between), and its crash count starts again from 0; the new epoch, or
    /// `None` if its status was not `from`.
    fn reopen(
        &self,
        run: &str,
        from: RunStatus,
        to: RunStatus,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<u64>, JournalError>;
    /// A run.
    fn run(&self, run: &str) -> Result<RunRecord, JournalError>;
    /// The newest run of a workflow with a transaction id.
    fn find_transaction(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<RunRecord>, JournalError>;
    /// Every record of a run, in order.
    fn records(&self, run: &str) -> Result<Vec<Record>, JournalError>;
    /// The files a run was started with.
    fn sources(&self, hash: &str) -> Result<Vec<(PathBuf, String)>, JournalError>;
    /// Runs, newest first.
    fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, JournalError>;
    /// Takes the lease of an unfinished run for `owner` unless another live
    /// holder has it, incrementing its epoch; the new epoch, or `None` if it
    /// could not.
    fn claim(&self, run: &str, owner: &Owner, lease: Duration)
    -> Result<Option<u64>, JournalError>;
    /// Claims up to `limit` unfinished runs (running or compensating) that
    /// no live host holds, skipping `skip` (runs this process is at): each
    /// with its new epoch. What a surviving host does for a dead one's runs.
    fn claim_orphans(
        &self,
        owner: &Owner,
        lease: Duration,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<(String, u64)>, JournalError>;
    /// Extends the leases `owner` holds on `runs` (those it executes);
    /// returns the runs it still held and renewed.
    fn renew(
        &self,
        owner: &Owner,
        lease: Duration,
        runs: &[String],
    ) -> Result<Vec<String>, JournalError>;
    /// Asks the process executing a run to cancel it.
    fn request_cancel(&self, run: &str) -> Result<(), JournalError>;
    /// Whether someone asked to cancel the run.
    fn cancel_requested(&self, run: &str) -> Result<bool, JournalError>;
    /// How many runs have `status` (for metrics).
    fn count(&self, status: RunStatus) -> Result<u64, JournalError>;
    /// Waiting runs whose wake-up time is at or before `now` (unix ms),
    /// earliest first, at most `limit`: the timers due.
    fn due(&self, now: i64, limit: usize) -> Result<Vec<String>, JournalError>;
    /// Where `workflow`'s schedule stands. A schedule seen for the first
    /// time, or whose `pattern` (its cron and time zone) changed, starts
    /// from `initial` (unix ms) with nothing pending.
    fn schedule_state(
        &self,
        workflow: &str,
        pattern: &str,
        initial: i64,
    ) -> Result<ScheduleState, JournalError>;
    /// Moves the schedule from `last` (with nothing pending) on to
    /// `latest`, with `pending` the tick whose run is to be recorded next;
    /// whether it did (of hosts deciding at once, one does).
    fn decide_schedule(
        &self,
        workflow: &str,
        last: i64,
        latest: i64,
        pending: Option<i64>,
    ) -> Result<bool, JournalError>;
    /// Says the run of the pending tick `tick` is recorded.
    fn settle_schedule(&self, workflow: &str, tick: i64) -> Result<(), JournalError>;
    /// Starts (leased to `owner`, status `running`) the queued runs for
    /// which their key now has room, highest priority first, then oldest;
    /// at most `limit` in all. Returns each with its lease epoch.
    fn promote(
        &self,
        owner: &Owner,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, JournalError>;
    /// Ends a run that is still `queued` as `cancelled` (nothing of it ran);
    /// whether it was.
    fn cancel_queued(&self, run: &str) -> Result<bool, JournalError>;
    /// Whether a run of a tick of `workflow`'s schedule before `at` (unix
    /// ms) was unfinished at `at` (a scheduled run occupies its schedule
    /// from its tick to its end).
    fn schedule_busy(&self, workflow: &str, at: i64) -> Result<bool, JournalError>;
    /// Deletes finished runs (and their records) that finished before
    /// `finished_before` (unix ms), of one workflow or all; returns how many.
    fn prune(&self, finished_before: i64, workflow: Option<&str>) -> Result<usize, JournalError>;

    /// The history the orchestrator replays to resume a run.
    fn history(&self, run: &str) -> Result<History, JournalError> {
        let mut history = History::default();
        for record in self.records(run)? {
            history.last_seq = history.last_seq.max(record.seq);
            match record.kind {
                RecordKind::Started {
                    node,
                    action,
                    attempt,
                    ..
                } => history.started(&node, action, attempt),
                RecordKind::Finished {
                    node,
                    action,
                    attempt,
                    record: outcome,
                } => history.finished(record.seq, &node, action, attempt, outcome),
                RecordKind::Event(event) => history.events.push(event),
                RecordKind::Retry { .. } => history.reopen_failed_compensations(),
                RecordKind::Compensating(_) | RecordKind::Requests { .. } => {}
            }
        }
        Ok(history)
    }
}

/// Now, in unix ms.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// Now, in unix µs.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
