//! The orchestrator: runs a workflow's flow (sequence, parallel, `when`,
//! `transform`), binds step outputs to names, and on failure compensates what
//! ran, in reverse order (the README's "Semantics" section).
//!
//! It knows steps only through the [`Step`] trait, so its semantics are tested
//! with plain Rust closures ([`FnStep`]); the WASM layer plugs in real
//! components. It may not touch manifests, WASM or storage.

mod cancel;
mod clock;
pub mod fixtures;
mod plan;
mod record;
mod report;
mod run;
mod step;

#[cfg(test)]
mod tests;

pub use cancel::CancelSignal;
pub use clock::Clock;
pub use plan::{
    Backoff, Call, Entry, JsonCheck, OnFailure, RetryPolicy, Sleep, StepPolicy, StepSpec, Workflow,
};
pub use record::{
    CallRecord, CallStart, Fence, History, NoRecorder, RecordError, RecordedCall, Recorder,
    Recording,
};
pub use report::{CompensationFailure, Outcome, RunError, RunReport, RunStatus, TraceEntry};
pub use run::{DEFAULT_CALL_TIMEOUT, Durability, RunRequest, Saga, rfc3339};
pub use step::{
    Action, Event, FailureKind, FnStep, Invoked, OutboundLog, OutboundRequest, RunEvents, Step,
    StepCall, StepFailure,
};
