//! What a run reports: its status, output, error and the trace of every call.

use serde::Serialize;

use super::step::{Action, Event, FailureKind, OutboundRequest, StepFailure};
use crate::json::Json;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// In progress (or left for a later resume, e.g. at a background step).
    Running,
    /// An async step waits for an outside answer.
    Waiting,
    /// Compensating after a failure.
    Compensating,
    /// Every entry ran; the output is set.
    Done,
    /// A step failed and every compensation succeeded.
    Reverted,
    /// A step failed and at least one compensation failed too.
    Failed,
    /// Cancelled from outside, and compensated.
    Cancelled,
    /// Waits for a slot of its workflow's `concurrency` (nothing ran yet).
    Queued,
}

impl RunStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Compensating => "compensating",
            RunStatus::Done => "done",
            RunStatus::Reverted => "reverted",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Queued => "queued",
        }
    }

    /// The status named `name`.
    pub fn from_name(name: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::Compensating,
            RunStatus::Done,
            RunStatus::Reverted,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Queued,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether the run has ended (nothing will resume it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Done | RunStatus::Reverted | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// One invoke or compensate attempt.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TraceEntry {
    /// The step's name.
    pub step: String,
    /// The call's unique name, when it differs from the step's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Invoke or compensate.
    pub action: Action,
    /// From 1.
    pub attempt: u32,
    /// `ok`, `error` or `skipped`.
    pub outcome: Outcome,
    /// The invoke's input, or the compensation data received.
    pub input: Option<Json>,
    /// What an invoke returned (an async step's: its invoke's, then its
    /// answer's); none for a compensation, a failure or a skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    /// The failure, for outcome `error`.
    pub error: Option<StepFailure>,
    /// When the attempt started, in ms since the run started.
    pub started_ms: f64,
    /// How long it took.
    pub duration_ms: f64,
    /// The outbound HTTP requests it made, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<OutboundRequest>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Succeeded.
    Ok,
    /// Failed.
    Error,
    /// The step returned skip.
    Skipped,
}

/// A compensation that still failed after its retries.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CompensationFailure {
    /// The step whose compensation failed.
    pub step: String,
    /// Its last error.
    #[serde(flatten)]
    pub error: StepFailure,
}

/// Why a run did not end `done`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RunError {
    /// The step that failed, if a step did.
    pub step: Option<String>,
    /// The category.
    pub kind: FailureKind,
    /// For people.
    pub message: String,
    /// Whether the failure was permanent.
    pub permanent: bool,
    /// Every compensation that failed (then the run is `failed`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub compensation_failures: Vec<CompensationFailure>,
}

/// The result of a run, as `host run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// The transaction id.
    pub transaction_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// Done, but some step failed with `on-permanent-failure` other than
    /// `fail` (its error is in `errors`).
    pub partial: bool,
    /// The output, when done.
    pub output: Option<Json>,
    /// The error, when not done.
    pub error: Option<RunError>,
    /// Step failures that did not stop the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RunError>,
    /// Every call, in the order they started.
    pub trace: Vec<TraceEntry>,
    /// Events emitted by steps and hooks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Every event of the run, lifecycle events included (what subscribers get).
    #[serde(skip)]
    pub all_events: Vec<Event>,
    /// Wall time of the run.
    pub duration_ms: f64,
    /// When a waiting run wakes (unix ms): its earliest sleep's end or
    /// async step's deadline.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ms_as_rfc3339"
    )]
    pub wake_at: Option<i64>,
    /// The run this one runs again (`host runs rerun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// The runs that ran this one again, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<String>,
    /// The schedule's tick this run was started for (unix ms).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ms_as_rfc3339"
    )]
    pub tick: Option<i64>,
    /// The OpenTelemetry trace its spans belong to (32 hex digits), when it
    /// has one (a caller's `traceparent`, or traces sent by its host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn ms_as_rfc3339<S: serde::Serializer>(at: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(ms) => s.serialize_str(&super::run::rfc3339(*ms)),
        None => s.serialize_none(),
    }
}
