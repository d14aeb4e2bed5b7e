//! A component as a [`Step`]: each call instantiates it in a fresh sandbox.

use std::sync::Arc;

use futures::future::BoxFuture;
use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap, WasmBacktrace};

use super::sandbox::{DeadlineExceeded, HostState, Limits, new_store};
use super::{LoadedComponent, Runtime};
use crate::app::Grants;
use crate::capabilities::bindings::{self as wit, StepResponse};
use crate::capabilities::{CallCapabilities, OutboundCall, Services, from_wit_kind};
use crate::json::Json;
use crate::saga::{FailureKind, Invoked, Step, StepCall, StepFailure};
use crate::telemetry::CallSpan;

/// A step implemented by a WebAssembly component.
pub struct WasmStep {
    runtime: Arc<Runtime>,
    component: Arc<LoadedComponent>,
    services: Services,
    grants: Arc<Grants>,
    limits: Limits,
}

impl WasmStep {
    /// A step that runs `component` with `grants` over `services`.
    pub fn new(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        services: Services,
        grants: Grants,
        limits: Limits,
    ) -> WasmStep {
        WasmStep {
            runtime,
            component,
            services,
            grants: Arc::new(grants),
            limits,
        }
    }

    /// A fresh store for `call`, whose idempotency key is `key`.
    fn store(&self, call: &StepCall, key: Arc<str>) -> Store<HostState> {
        let capabilities = CallCapabilities {
            services: self.services.clone(),
            grants: self.grants.clone(),
            node: call.node.clone(),
            run_id: call.run_id.clone(),
            events: call.events.clone(),
            origin: Some(format!("{}:{}:{}", call.run_id, call.node, call.action.as_str()).into()),
            created: Default::default(),
            emitted: Default::default(),
            entity_writes: Default::default(),
            entity_bytes: Default::default(),
            logged: Default::default(),
            outbound: Arc::new(
                OutboundCall::new(key, call.deadline, call.outbound.clone()).in_span(
                    call.trace_context.map(|context| CallSpan {
                        context,
                        run_id: call.run_id.clone(),
                        node: call.node.clone(),
                        action: call.action,
                        attempt: call.attempt,
                    }),
                ),
            ),
            fence: call.fence.clone(),
        };
        new_store(
            self.runtime.engine(),
            capabilities,
            self.limits,
            call.deadline,
        )
    }

    fn context<'a>(call: &'a StepCall, idempotency_key: &'a str) -> wit::StepContext<'a> {
        wit::StepContext {
            workflow: &call.workflow,
            run_id: &call.run_id,
            transaction_id: &call.transaction_id,
            step: &call.node,
            attempt: call.attempt,
            idempotency_key,
            metadata: call.metadata.text(),
            config: call.config.text(),
        }
    }

    async fn invoke_in_sandbox(
        &self,
        input: &Json,
        call: &StepCall,
    ) -> Result<Invoked, StepFailure> {
        let _slot = self.runtime.invoke_slot(&call.workflow).await;
        // Formatted once: the context and the outbound requests share it.
        let key: Arc<str> = call.idempotency_key().into();
        let mut store = self.store(call, key.clone());
        let result = async {
            let instance = self.component.pre.instantiate_async(&mut store).await?;
            instance
                .call_invoke(&mut store, input.text(), Self::context(call, &key))
                .await
        }
        .await;
        let result = finish(&mut store, call, result)?;
        let state = store.data();
        match result {
            Ok(StepResponse::Skip) => Ok(Invoked::Skip),
            Ok(StepResponse::Done(done)) => {
                let output = parse_output(state.scrub(done.output), "output")?;
                let compensation = done
                    .compensation_data
                    .map(|c| parse_output(state.scrub(c), "compensation data"))
                    .transpose()?;
                Ok(Invoked::Done {
                    output,
                    compensation,
                })
            }
            Err(err) => Err(step_failure(scrubbed(state, err))?),
        }
    }

    async fn compensate_in_sandbox(
        &self,
        data: Option<&Json>,
        call: &StepCall,
    ) -> Result<(), StepFailure> {
        let key: Arc<str> = call.idempotency_key().into();
        let mut store = self.store(call, key.clone());
        let result = async {
            let instance = self.component.pre.instantiate_async(&mut store).await?;
            instance
                .call_compensate(&mut store, data.map(Json::text), Self::context(call, &key))
                .await
        }
        .await;
        match finish(&mut store, call, result)? {
            Ok(()) => Ok(()),
            Err(err) => Err(step_failure(scrubbed(store.data(), err))?),
        }
    }
}

impl Step for WasmStep {
    fn invoke<'a>(
        &'a self,
        input: &'a Json,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<Invoked, StepFailure>> {
        Box::pin(self.invoke_in_sandbox(input, call))
    }

    fn compensate<'a>(
        &'a self,
        data: Option<&'a Json>,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<(), StepFailure>> {
        Box::pin(self.compensate_in_sandbox(data, call))
    }
}

/// Forwards the guest's stdio to the log and turns a trap into a failure.
fn finish<T>(
    store: &mut Store<HostState>,
    call: &StepCall,
    result: wasmtime::Result<T>,
) -> Result<T, StepFailure> {
    let state = store.data();
    let (stdout, dropped_out) = state.stdout.text();
    let (stderr, dropped_err) = state.stderr.text();
    let stdout = (state.scrub(stdout), dropped_out);
    let stderr = (state.scrub(stderr), dropped_err);
    for (stream, (text, dropped)) in [("stdout", &stdout), ("stderr", &stderr)] {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "step", step = &*call.node, stream, "{line}");
        }
        if *dropped > 0 {
            tracing::warn!(target: "step", step = &*call.node, stream, "{dropped} more bytes of output were dropped");
        }
    }
    let stderr = stderr.0;
    result.map_err(|err| {
        let exceeded = store.data().limiter.exceeded;
        trap_failure(err, exceeded, &stderr, call)
    })
}

/// Classifies a trap: deadline, memory limit, or another guest fault.
fn trap_failure(
    err: wasmtime::Error,
    memory_exceeded: Option<usize>,
    stderr: &str,
    call: &StepCall,
) -> StepFailure {
    if err.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt))
    {
        return StepFailure::new(
            FailureKind::Timeout,
            format!("step '{}' was interrupted at its deadline", call.node),
        );
    }
    if let Some(bytes) = memory_exceeded {
        return StepFailure::new(
            FailureKind::OutOfMemory,
            format!(
                "step '{}' tried to grow its memory to {} MiB, past its limit",
                call.node,
                bytes >> 20
            ),
        );
    }
    // A guest's last words on stderr (a panic message) say more than the trap.
    let last_words = last_words(stderr);
    match err.downcast_ref::<Trap>() {
        Some(trap) => StepFailure::new(
            FailureKind::Trap,
            format!("step '{}' trapped: {trap}{last_words}", call.node),
        ),
        // An error raised while the guest ran that is not a wasm trap: the
        // guest broke the contract (a forged or dropped handle, a handle
        // table past its limit). Host imports fail as step errors, never
        // like this, so it is the guest's fault: permanent, and said
        // without the host's backtrace.
        None if err.downcast_ref::<WasmBacktrace>().is_some()
            || err.downcast_ref::<ResourceTableError>().is_some() =>
        {
            StepFailure::new(
                FailureKind::Trap,
                format!(
                    "step '{}' trapped: it broke the contract: {}{last_words}",
                    call.node,
                    err.root_cause()
                ),
            )
            .permanent()
        }
        None => StepFailure::new(
            FailureKind::Host,
            format!("step '{}' could not run: {err:#}{last_words}", call.node),
        ),
    }
}

/// The end of a guest's stderr (its panic message, usually), without
/// Rust's hint about backtraces: at most 3 lines and 500 bytes.
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut words = lines[lines.len().saturating_sub(3)..].join(" / ");
    if words.len() > 500 {
        let cut = (0..=500)
            .rev()
            .find(|i| words.is_char_boundary(*i))
            .unwrap_or(0);
        words.truncate(cut);
        words.push('…');
    }
    format!(" ({words})")
}

/// The largest output, compensation data or error compensation data a call
/// may return (its JSON text): past it, each copy the host makes (journal,
/// report, events) would multiply a guest's memory into the host's.
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;

/// The longest error message a step may return; a longer one is cut.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 16 << 10;

fn parse_output(text: String, what: &str) -> Result<Json, StepFailure> {
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(StepFailure::new(
            FailureKind::InvalidOutput,
            format!(
                "the step returned {what} of {} bytes, more than the {} MiB a call may return",
                text.len(),
                MAX_OUTPUT_BYTES >> 20
            ),
        )
        .permanent());
    }
    Json::parse(text).map_err(|e| {
        StepFailure::new(
            FailureKind::InvalidOutput,
            format!("the step returned {what} that is not JSON: {e}"),
        )
        .permanent()
    })
}

/// `message`, cut to [`MAX_ERROR_MESSAGE_BYTES`] (at a character boundary)
/// with a note of how long it was.
fn cut_message(mut message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let total = message.len();
    let cut = (0..=MAX_ERROR_MESSAGE_BYTES)
        .rev()
        .find(|i| message.is_char_boundary(*i))
        .unwrap_or(0);
    message.truncate(cut);
    message.push_str(&format!("… (cut: {total} bytes in all)"));
    message
}

/// A guest's error without the values of its granted secrets.
fn scrubbed(state: &HostState, mut err: wit::StepError) -> wit::StepError {
    err.message = state.scrub(err.message);
    err.compensation_data = err.compensation_data.map(|c| state.scrub(c));
    err
}

/// A guest's `step-error` as the orchestrator's failure.
fn step_failure(err: wit::StepError) -> Result<StepFailure, StepFailure> {
    let compensation_data = err
        .compensation_data
        .map(|c| parse_output(c, "error compensation data"))
        .transpose()?;
    Ok(StepFailure {
        kind: from_wit_kind(err.kind),
        message: cut_message(err.message),
        permanent: err.permanent,
        compensation_data,
    })
}
