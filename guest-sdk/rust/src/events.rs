//! Typed access to the run's event emitter.

use serde::Serialize;

use crate::__private::bindings::wasaga::step::events::Emitter;
use crate::StepError;

/// The run's event emitter: events reach the run's subscribers.
pub struct Events {
    emitter: Emitter,
}

impl Events {
    pub(crate) fn new(emitter: Emitter) -> Events {
        Events { emitter }
    }

    /// Emits event `name` with a JSON payload.
    pub fn emit<T: Serialize + ?Sized>(&self, name: &str, data: &T) -> Result<(), StepError> {
        let data = serde_json::to_string(data)
            .map_err(|e| StepError::invalid_data(e.to_string()).permanent())?;
        self.emitter.emit(name, &data).map_err(StepError::from_wit)
    }
}
