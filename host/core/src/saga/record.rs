//! What the orchestrator writes down as a run progresses (before each next
//! action), and what it reads back to resume a run without calling a settled
//! step again. Storage is someone else's business: a [`Recorder`] implements
//! it (the journal module), or [`NoRecorder`] keeps nothing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::report::RunError;
use super::step::{Action, Event, OutboundRequest, StepFailure};
use crate::json::Json;

/// The outcome of one call attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum CallRecord {
    /// An invoke succeeded.
    Done {
        /// Its output.
        output: Json,
        /// Its compensation data, if other than the output.
        compensation: Option<Json>,
    },
    /// An invoke returned skip.
    Skipped,
    /// An attempt failed; `last` when no retry follows.
    Failed {
        /// The failure.
        error: StepFailure,
        /// Whether this settled the call.
        last: bool,
    },
    /// A compensation succeeded.
    Compensated,
    /// An async step's invoke returned: the step waits for an outside answer
    /// (or a sleep started: it waits for its time).
    Waiting {
        /// What the invoke returned.
        output: Json,
        /// Unix ms: a sleep's wake-up time, or the deadline of an async
        /// step's answer (past it, the step fails as `timeout`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
    },
}

impl CallRecord {
    /// Whether the call is settled (nothing more will be attempted).
    pub fn settles(&self) -> bool {
        !matches!(
            self,
            CallRecord::Failed { last: false, .. } | CallRecord::Waiting { .. }
        )
    }

    /// The record's outcome as the event stream and metrics name it:
    /// `ok`, `waiting`, `skipped` or `error`.
    pub fn outcome_name(&self) -> &'static str {
        match self {
            CallRecord::Done { .. } | CallRecord::Compensated => "ok",
            CallRecord::Waiting { .. } => "waiting",
            CallRecord::Skipped => "skipped",
            CallRecord::Failed { .. } => "error",
        }
    }

    /// What compensating this call would receive.
    pub fn compensation_data(&self) -> Option<Json> {
        match self {
            CallRecord::Done {
                output,
                compensation,
            } => Some(compensation.clone().unwrap_or_else(|| output.clone())),
            CallRecord::Waiting { output, .. } => Some(output.clone()),
            CallRecord::Failed { error, .. } => error.compensation_data.clone(),
            _ => None,
        }
    }
}

/// A call attempt about to start.
#[derive(Debug, Clone, Copy)]
pub struct CallStart<'a> {
    /// The call's unique name.
    pub node: &'a str,
    /// The declared step's name.
    pub step: &'a str,
    /// Invoke or compensate.
    pub action: Action,
    /// From 1.
    pub attempt: u32,
    /// The input (the compensation data for a compensation).
    pub input: Option<&'a Json>,
}

/// A recording failed: the run cannot promise durability, so it stops; or
/// the run was cancelled from outside.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The journal could not write.
    #[error("the journal could not record the run: {0}")]
    Failed(String),
    /// Someone cancelled the run.
    #[error("the run was cancelled")]
    Cancelled,
    /// Another host took the run over (this one's lease expired): this
    /// process writes nothing more to it and stops executing it.
    #[error("{0}")]
    LeaseLost(String),
}

/// Receives every transition of a run, in order, before the next action.
pub trait Recorder: Send + Sync {
    /// A call attempt is about to start, with its input (the compensation
    /// data for a compensation).
    fn call_started(&self, call: &CallStart<'_>) -> Result<(), RecordError>;
    /// [`Recorder::call_started`], as the orchestrator calls it: a recorder
    /// whose write may wait for other runs' commits returns a future that
    /// waits without holding the thread (other runs go on meanwhile, and
    /// join the next commit). By default the synchronous call.
    fn call_started_async(&self, call: &CallStart<'_>) -> Recording<'_> {
        Recording::ready(self.call_started(call))
    }
    /// A call attempt finished; returns the record's sequence number (its
    /// place in the run's history, which orders compensations).
    fn call_finished(
        &self,
        node: &str,
        action: Action,
        attempt: u32,
        record: &CallRecord,
    ) -> Result<u64, RecordError>;
    /// The outbound requests of a call attempt, just before it is
    /// [`Recorder::call_finished`] (only when it made some).
    fn call_requests(
        &self,
        node: &str,
        action: Action,
        attempt: u32,
        requests: &[OutboundRequest],
    ) -> Result<(), RecordError> {
        let _ = (node, action, attempt, requests);
        Ok(())
    }
    /// An event was emitted.
    fn event(&self, event: &Event) -> Result<(), RecordError>;
    /// The forward pass failed; compensation starts.
    fn compensating(&self, error: &RunError) -> Result<(), RecordError>;
    /// Writes whatever is held back (the run ends or pauses).
    fn flush(&self) -> Result<(), RecordError> {
        Ok(())
    }
    /// Whether the run can no longer be recorded by this host (another host
    /// took it over, or the journal cannot be written): the run stops where
    /// it is, without compensating (whoever claims it next continues it).
    fn lost(&self) -> bool {
        false
    }
    /// The lease this run is executed under, if it is journaled: the
    /// capabilities fence a call's writes on it, so a host that lost the
    /// run writes nothing more.
    fn fence(&self) -> Option<Fence> {
        None
    }
}

/// A recording under way: done at once (no allocation), or waiting for its
/// commit. Await it before the call it records.
#[must_use = "the call may start only once its start is recorded"]
pub struct Recording<'a>(RecordingState<'a>);

type RecordingFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RecordError>> + Send + 'a>>;

enum RecordingState<'a> {
    Ready(Option<Result<(), RecordError>>),
    Waiting(RecordingFuture<'a>),
}

impl<'a> Recording<'a> {
    /// A recording already made (or refused).
    pub fn ready(result: Result<(), RecordError>) -> Recording<'a> {
        Recording(RecordingState::Ready(Some(result)))
    }

    /// A recording that completes with `future`.
    pub fn waiting(
        future: impl std::future::Future<Output = Result<(), RecordError>> + Send + 'a,
    ) -> Recording<'a> {
        Recording(RecordingState::Waiting(Box::pin(future)))
    }
}

impl std::future::Future for Recording<'_> {
    type Output = Result<(), RecordError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            RecordingState::Ready(result) => std::task::Poll::Ready(
                result
                    .take()
                    .expect("a recording is not polled after it completed"),
            ),
            RecordingState::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// A run's lease as its writes carry it: the run and the lease epoch the
/// executing host claimed. A write is applied only while the run's epoch in
/// the journal is still this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The run.
    pub run: std::sync::Arc<str>,
    /// Its lease epoch when this host claimed it.
    pub epoch: u64,
}

/// Records nothing (a run in memory only); numbers records in order.
#[derive(Debug, Default)]
pub struct NoRecorder {
    seq: std::sync::atomic::AtomicU64,
}

impl Recorder for NoRecorder {
    fn call_started(&self, _: &CallStart<'_>) -> Result<(), RecordError> {
        Ok(())
    }

    fn call_finished(
        &self,
        _: &str,
        _: Action,
        _: u32,
        _: &CallRecord,
    ) -> Result<u64, RecordError> {
        Ok(self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }

    fn event(&self, _: &Event) -> Result<(), RecordError> {
        Ok(())
    }

    fn compensating(&self, _: &RunError) -> Result<(), RecordError> {
        Ok(())
    }
}

/// What happened to one call (a node's invoke, or its compensation) so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedCall {
    /// The highest attempt started.
    pub attempts: u32,
    /// The settling record and its sequence number, if the call is settled.
    pub settled: Option<(u64, CallRecord)>,
    /// An async step's invoke output and its sequence number, while it waits.
    pub waiting: Option<(u64, Json)>,
    /// Until when it waits (unix ms), if it waits for a time.
    pub until: Option<i64>,
}

/// A run's recorded past: replaying the flow over it skips every settled call.
#[derive(Debug, Clone, Default)]
pub struct History {
    calls: HashMap<(String, Action), RecordedCall>,
    /// The events emitted so far, in order.
    pub events: Vec<Event>,
    /// The highest sequence number seen.
    pub last_seq: u64,
}

impl History {
    /// Adds a call's start.
    pub fn started(&mut self, node: &str, action: Action, attempt: u32) {
        let call = self.calls.entry((node.to_string(), action)).or_default();
        call.attempts = call.attempts.max(attempt);
    }

    /// Adds a call's outcome.
    pub fn finished(
        &mut self,
        seq: u64,
        node: &str,
        action: Action,
        attempt: u32,
        record: CallRecord,
    ) {
        self.last_seq = self.last_seq.max(seq);
        let call = self.calls.entry((node.to_string(), action)).or_default();
        call.attempts = call.attempts.max(attempt);
        match record {
            CallRecord::Waiting { output, until } => {
                call.waiting = Some((seq, output));
                call.until = until;
            }
            record if record.settles() => {
                call.waiting = None;
                call.until = None;
                call.settled = Some((seq, record));
            }
            // An attempt that failed and is retried waits for nothing more
            // (its answer timed out, say): the next attempt is invoked anew.
            _ => {
                call.waiting = None;
                call.until = None;
            }
        }
    }

    /// What happened to a call.
    pub fn call(&self, node: &str, action: Action) -> Option<&RecordedCall> {
        // A fresh run (the common case) has no past: no key is built.
        if self.calls.is_empty() {
            return None;
        }
        self.calls.get(&(node.to_string(), action))
    }

    /// The async steps waiting for an answer.
    pub fn waiting_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .calls
            .iter()
            .filter(|((_, action), call)| {
                *action == Action::Invoke && call.waiting.is_some() && call.settled.is_none()
            })
            .map(|((node, _), _)| node.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// The compensations that failed for good, by call name, in no order.
    pub fn failed_compensations(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .calls
            .iter()
            .filter(|((_, action), call)| {
                *action == Action::Compensate
                    && matches!(call.settled, Some((_, CallRecord::Failed { .. })))
            })
            .map(|((node, _), _)| node.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// Makes the compensations that failed for good unsettled, so that the
    /// next backward pass calls them again (with the next attempt number):
    /// what a journaled retry request means.
    pub fn reopen_failed_compensations(&mut self) {
        for ((_, action), call) in self.calls.iter_mut() {
            if *action == Action::Compensate
                && matches!(call.settled, Some((_, CallRecord::Failed { .. })))
            {
                call.settled = None;
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}
