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
