//! The `Step` trait (what the orchestrator calls) and what crosses it.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::json::Json;

/// A step: something that can be invoked and compensated.
pub trait Step: Send + Sync {
    /// Does the step's work on `input`.
    fn invoke<'a>(
        &'a self,
        input: &'a Json,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<Invoked, StepFailure>>;

    /// Undoes it, given the compensation data (or nothing).
    fn compensate<'a>(
        &'a self,
        data: Option<&'a Json>,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<(), StepFailure>>;
}

/// The outcome of a successful invoke.
#[derive(Debug, Clone, PartialEq)]
pub enum Invoked {
    /// Work done: the output, and compensation data if other than the output.
    Done {
        /// Bound to the entry's `as` name.
        output: Json,
        /// What compensate receives; `None` means `output`.
        compensation: Option<Json>,
    },
    /// The step chose not to run.
    Skip,
}

impl Invoked {
    /// Done, with the output as compensation data.
    pub fn done(output: Json) -> Invoked {
        Invoked::Done {
            output,
            compensation: None,
        }
    }
}

/// Invoke or compensate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The step's work.
    Invoke,
    /// Its undo.
    Compensate,
}

impl Action {
    /// The action named `invoke` or `compensate`.
    pub fn from_name(name: &str) -> Option<Action> {
        match name {
            "invoke" => Some(Action::Invoke),
            "compensate" => Some(Action::Compensate),
            _ => None,
        }
    }

    /// `invoke` or `compensate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Invoke => "invoke",
            Action::Compensate => "compensate",
        }
    }
}

/// Everything a step learns about the call besides its input.
#[derive(Debug, Clone)]
pub struct StepCall {
    /// The workflow's name.
    pub workflow: Arc<str>,
    /// The run's id.
    pub run_id: Arc<str>,
    /// The run's transaction id.
    pub transaction_id: Arc<str>,
    /// The step's name as declared.
    pub step: Arc<str>,
    /// The call's unique name in the workflow (see [`super::Call::node`]).
    pub node: Arc<str>,
    /// Invoke or compensate.
    pub action: Action,
    /// From 1.
    pub attempt: u32,
    /// Run metadata.
    pub metadata: Json,
    /// The run's trace (its outbound requests carry it on).
    pub trace_context: Option<crate::telemetry::TraceContext>,
    /// The step's config.
    pub config: Json,
    /// When this attempt must have finished.
    pub deadline: Option<Instant>,
    /// Where `events.emit` goes.
    pub events: Arc<RunEvents>,
    /// Where the step notes the outbound requests it makes (for the trace).
    pub outbound: Arc<OutboundLog>,
    /// The lease the run executes under (journaled runs): the call's writes
    /// to shared state are applied only while it holds.
    pub fence: Option<super::Fence>,
}

impl StepCall {
    /// `<workflow>:<transaction>:<step>:<invoke|compensate>`, the same for
    /// every attempt of this call.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.workflow,
            self.transaction_id,
            self.node,
            self.action.as_str()
        )
    }
}

/// One outbound HTTP request of a call attempt, as its trace entry lists it.
/// The URL has no query string and no secret value (it is the URL the guest
/// wrote, before the host put secrets in).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct OutboundRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `scheme://host[:port]/path`.
    pub url: String,
    /// The response's status, when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the request failed or was denied (with the grant that would
    /// allow it, for a denial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From sending to the response's headers (or the failure).
    pub duration_ms: f64,
    /// When it was sent (RFC 3339, microseconds), for its span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// The outbound requests of one call attempt, noted by the step as it makes
/// them and read by the orchestrator when the attempt ends.
#[derive(Debug, Default)]
pub struct OutboundLog(Mutex<Vec<OutboundRequest>>);

impl OutboundLog {
    /// Notes a request; returns its place, to [`OutboundLog::update`] it later.
    pub fn push(&self, request: OutboundRequest) -> usize {
        let mut requests = self.0.lock().expect("outbound log");
        requests.push(request);
        requests.len() - 1
    }

    /// Changes the request at `index` (its body failed after the headers came).
    pub fn update(&self, index: usize, change: impl FnOnce(&mut OutboundRequest)) {
        if let Some(request) = self.0.lock().expect("outbound log").get_mut(index) {
            change(request);
        }
    }

    /// Every request noted so far, leaving none.
    pub fn take(&self) -> Vec<OutboundRequest> {
        std::mem::take(&mut *self.0.lock().expect("outbound log"))
    }
}

/// An event emitted during a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Event {
    /// The event's name.
    pub name: String,
    /// Its payload.
    pub data: Json,
    /// The call that emitted it, if a step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A run lifecycle event (`run.started`, `step.completed`, ...), which
    /// subscribers receive but the run's report does not list.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub lifecycle: bool,
}

/// The events of one run, in emission order; each new one is also handed to
/// the run's recorder, so the journal holds what steps emitted (a resumed
/// run has them, and reports show them).
#[derive(Default)]
pub struct RunEvents {
    events: Mutex<Vec<Event>>,
    recorder: Option<Arc<dyn super::Recorder>>,
}

impl std::fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunEvents")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl RunEvents {
    /// The events of a run that records them with `recorder`, starting with
    /// those already journaled (a resumed run's), which are not recorded again.
    pub fn recorded(recorder: Arc<dyn super::Recorder>, journaled: &[Event]) -> RunEvents {
        RunEvents {
            events: Mutex::new(journaled.to_vec()),
            recorder: Some(recorder),
        }
    }

    /// Records an event.
    pub fn emit(&self, event: Event) {
        if let Some(recorder) = &self.recorder
            && let Err(e) = recorder.event(&event)
        {
            tracing::error!("{e}");
        }
        self.events.lock().expect("events lock").push(event);
    }

    /// Every event so far, lifecycle events included.
    pub fn all(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// How many events steps and hooks emitted so far.
    pub fn snapshot_len(&self) -> usize {
        let events = self.events.lock().expect("events lock");
        events.iter().filter(|e| !e.lifecycle).count()
    }

    /// The events steps and hooks emitted, in order.
    pub fn snapshot(&self) -> Vec<Event> {
        let events = self.events.lock().expect("events lock");
        events.iter().filter(|e| !e.lifecycle).cloned().collect()
    }
}

/// Why a call failed. The first kinds are the WIT `error-kind`s a step
/// reports; the rest are failures the host observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// See the WIT `error-kind`.
    InvalidData,
    /// See the WIT `error-kind`.
    InvalidArgument,
    /// See the WIT `error-kind`.
    NotFound,
    /// See the WIT `error-kind`.
    NotAllowed,
    /// See the WIT `error-kind`.
    Unauthorized,
    /// See the WIT `error-kind`.
    Forbidden,
    /// See the WIT `error-kind`.
    Conflict,
    /// See the WIT `error-kind`.
    Duplicate,
    /// See the WIT `error-kind`.
    UnexpectedState,
    /// See the WIT `error-kind`.
    Database,
    /// See the WIT `error-kind`.
    Unknown,
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The guest trapped (a panic, `unreachable`, a bad memory access).
    Trap,
    /// The guest tried to grow its memory past its limit.
    OutOfMemory,
    /// The guest returned something that is not valid JSON.
    InvalidOutput,
    /// An expression of the manifest failed on the run's data.
    Expression,
    /// The run was cancelled.
    Cancelled,
    /// The host could not make the call (e.g. instantiation failed).
    Host,
}

impl FailureKind {
    /// The kind's kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidData => "invalid-data",
            FailureKind::InvalidArgument => "invalid-argument",
            FailureKind::NotFound => "not-found",
            FailureKind::NotAllowed => "not-allowed",
            FailureKind::Unauthorized => "unauthorized",
            FailureKind::Forbidden => "forbidden",
            FailureKind::Conflict => "conflict",
            FailureKind::Duplicate => "duplicate",
            FailureKind::UnexpectedState => "unexpected-state",
            FailureKind::Database => "database",
            FailureKind::Unknown => "unknown",
            FailureKind::Timeout => "timeout",
            FailureKind::Trap => "trap",
            FailureKind::OutOfMemory => "out-of-memory",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::Expression => "expression",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Host => "host",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: what a step reported or what the host observed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepFailure {
    /// The category.
    pub kind: FailureKind,
    /// For people.
    pub message: String,
    /// Never retried when true.
    pub permanent: bool,
    /// Handed to this step's compensation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation_data: Option<Json>,
}

impl StepFailure {
    /// A transient failure.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> StepFailure {
        StepFailure {
            kind,
            message: message.into(),
            permanent: false,
            compensation_data: None,
        }
    }

    /// The same failure, marked permanent.
    pub fn permanent(mut self) -> StepFailure {
        self.permanent = true;
        self
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

type InvokeFn =
    dyn Fn(Json, StepCall) -> BoxFuture<'static, Result<Invoked, StepFailure>> + Send + Sync;
type CompensateFn =
    dyn Fn(Option<Json>, StepCall) -> BoxFuture<'static, Result<(), StepFailure>> + Send + Sync;

/// A step made of closures: for tests of the orchestrator and for embedding
/// native steps.
pub struct FnStep {
    invoke: Box<InvokeFn>,
    compensate: Box<CompensateFn>,
}

impl FnStep {
    /// A step whose invoke is `f` and whose compensation does nothing.
    pub fn new<F, Fut>(f: F) -> FnStep
    where
        F: Fn(Json, StepCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Invoked, StepFailure>> + Send + 'static,
    {
        FnStep {
            invoke: Box::new(move |input, call| Box::pin(f(input, call))),
            compensate: Box::new(|_, _| Box::pin(async { Ok(()) })),
        }
    }

    /// Sets the compensation.
    pub fn with_compensate<F, Fut>(mut self, f: F) -> FnStep
    where
        F: Fn(Option<Json>, StepCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepFailure>> + Send + 'static,
    {
        self.compensate = Box::new(move |data, call| Box::pin(f(data, call)));
        self
    }
}

impl Step for FnStep {
    fn invoke<'a>(
        &'a self,
        input: &'a Json,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<Invoked, StepFailure>> {
        (self.invoke)(input.clone(), call.clone())
    }

    fn compensate<'a>(
        &'a self,
        data: Option<&'a Json>,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<(), StepFailure>> {
        (self.compensate)(data.cloned(), call.clone())
    }
}
