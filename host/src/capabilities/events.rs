//! `events`: a step emits named JSON events into its run's event list.

use wasmtime::component::Resource;

use super::{CapabilityError, CapabilityView};
use crate::json::Json;
use crate::saga::{Event, FailureKind};
use crate::wit::wasaga::step::events::{Host, HostEmitter};

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
