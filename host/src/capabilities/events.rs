//! `events`: a step emits named JSON events into its run's event list.
//! Granted by `events = true`; the run's event list is its state.

use std::sync::Arc;

use wasmtime::component::{Linker, Resource};

use super::bindings::wasaga::step::events::{self, Host, HostEmitter};
use super::{CallCapabilities, Capabilities, CapabilityError, CapabilityView, ViewOf};
use crate::app::{Grant, GrantEntry, GrantParser, GrantProblems};
use crate::json::Json;
use crate::saga::{Event, FailureKind};

/// The key of its grant, and the name it is resolved by.
pub const KEY: &str = "events";

/// The most events one call attempt may emit.
pub const MAX_PER_CALL: u32 = 100;
/// The most events the steps of one run may emit together.
pub const MAX_PER_RUN: usize = 1000;
/// The largest payload of one event (its JSON text).
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;
/// The longest event name.
pub const MAX_NAME_LEN: usize = 128;
/// Name prefixes the host's own lifecycle events use; a step may not emit
/// them (a subscriber must be able to trust `run.done`).
pub const RESERVED_PREFIXES: [&str; 3] = ["run.", "step.", "hook."];

/// `events = true`: the step may emit events.
#[derive(Debug, Clone, Copy)]
pub struct EventsGrant;

impl Grant for EventsGrant {
    fn to_toml(&self) -> String {
        "events = true".into()
    }
}

/// Reads `events = true | false`.
pub struct EventsGrantParser;

impl GrantParser for EventsGrantParser {
    fn key(&self) -> &'static str {
        KEY
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        let on: bool = entry.deserialize(problems)?;
        on.then(|| Arc::new(EventsGrant) as Arc<dyn Grant>)
    }
}

/// Whether the call may emit events; the `not-allowed` error naming the grant if not.
pub fn check(call: &CallCapabilities) -> Result<(), CapabilityError> {
    match call.grants.get::<EventsGrant>(KEY) {
        Some(_) => Ok(()),
        None => Err(CapabilityError::not_allowed(call.grants.denial(
            KEY,
            Arc::new(EventsGrant),
            "emitting events",
        ))),
    }
}

/// Refuses an event past the limits, with a reserved or malformed name.
fn check_event(call: &CallCapabilities, name: &str, data: &str) -> Result<(), CapabilityError> {
    let refuse = |message: String| {
        Err(CapabilityError::permanent(
            FailureKind::InvalidArgument,
            message,
        ))
    };
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'));
    if !valid_name {
        return refuse(format!(
            "'{}' is not an event name: use up to {MAX_NAME_LEN} letters, digits and . - _ : /",
            name.escape_debug()
        ));
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return refuse(format!(
            "event '{name}': names starting with '{prefix}' are the host's own lifecycle events"
        ));
    }
    if data.len() > MAX_PAYLOAD_BYTES {
        return refuse(format!(
            "event '{name}': the payload is {} bytes, more than the {} KiB an event may carry",
            data.len(),
            MAX_PAYLOAD_BYTES >> 10
        ));
    }
    let emitted = call
        .emitted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if emitted >= MAX_PER_CALL {
        return refuse(format!(
            "event '{name}': a call may emit at most {MAX_PER_CALL} events"
        ));
    }
    if call.events.snapshot_len() >= MAX_PER_RUN {
        return refuse(format!(
            "event '{name}': a run's steps may emit at most {MAX_PER_RUN} events"
        ));
    }
    Ok(())
}

/// Links `events`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    events::add_to_linker::<T, Capabilities>(linker, view)
}

/// The handle behind the WIT `emitter` resource (the grant is checked when resolved).
pub struct EmitterHandle;

impl Host for CapabilityView<'_> {}

impl HostEmitter for CapabilityView<'_> {
    fn emit(
        &mut self,
        handle: Resource<EmitterHandle>,
        name: String,
        data: String,
    ) -> Result<(), CapabilityError> {
        self.table.get(&handle)?;
        check_event(self.call, &name, &data)?;
        let data = Json::parse(data).map_err(|e| {
            CapabilityError::permanent(
                FailureKind::InvalidData,
                format!("event '{name}': the payload is not JSON: {e}"),
            )
        })?;
        tracing::info!(target: "step", step = &*self.call.node, event = %name, "event emitted");
        self.call.events.emit(Event {
            name,
            data,
            step: Some(self.call.node.to_string()),
            lifecycle: false,
        });
        Ok(())
    }

    fn drop(&mut self, handle: Resource<EmitterHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{call_with, grants_of};
    use wasmtime::component::ResourceTable;

    #[test]
    fn a_granted_step_emits_into_its_run() {
        let call = call_with(grants_of("events = true"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &call,
            table: &mut table,
        };
        let handle = view.table.push(EmitterHandle).unwrap();
        view.emit(handle, "brand.created".into(), "{\"id\":1}".into())
            .unwrap();
        let events = call.events.snapshot();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "brand.created");
    }

    #[test]
    fn an_ungranted_step_is_told_the_line_to_write() {
        let call = call_with(grants_of("entities = [\"brand\"]"));
        let Err(CapabilityError::Step { kind, message, .. }) = check(&call) else {
            panic!("denied")
        };
        assert_eq!(kind, FailureKind::NotAllowed);
        assert!(
            message.ends_with("grants = { entities = [\"brand\"], events = true }"),
            "{message}"
        );
    }

    #[test]
    fn lifecycle_names_are_the_host_s_and_events_are_bounded() {
        let call = call_with(grants_of("events = true"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &call,
            table: &mut table,
        };
        let mut emit = |name: &str, data: String| {
            let handle = view.table.push(EmitterHandle).unwrap();
            view.emit(handle, name.into(), data)
        };
        for name in [
            "run.done",
            "step.completed",
            "hook.x",
            "",
            "a\nb",
            &"x".repeat(129),
        ] {
            let Err(CapabilityError::Step {
                kind, permanent, ..
            }) = emit(name, "1".into())
            else {
                panic!("{name:?} is refused")
            };
            assert_eq!(kind, FailureKind::InvalidArgument);
            assert!(permanent);
        }
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        let Err(CapabilityError::Step { message, .. }) = emit("big", big) else {
            panic!("a payload past the limit is refused")
        };
        assert!(message.contains("more than the 64 KiB"), "{message}");
        for n in 0..MAX_PER_CALL {
            emit("brand.created", n.to_string()).unwrap();
        }
        let Err(CapabilityError::Step { message, .. }) = emit("brand.created", "0".into()) else {
            panic!("the call's limit holds")
        };
        assert!(message.contains("at most 100 events"), "{message}");
        assert_eq!(call.events.snapshot().len(), MAX_PER_CALL as usize);
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused() {
        let call = call_with(grants_of("events = true"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &call,
            table: &mut table,
        };
        let handle = view.table.push(EmitterHandle).unwrap();
        let Err(CapabilityError::Step { kind, .. }) = view.emit(handle, "e".into(), "{".into())
        else {
            panic!("refused")
        };
        assert_eq!(kind, FailureKind::InvalidData);
    }
}
