//! `log`: a step's log lines go to the host's log (stderr), tagged with the step.

use super::CapabilityView;
use crate::wit::wasaga::step::log::{Host, Level};

impl Host for CapabilityView<'_> {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let (step, run) = (&*self.call.node, &*self.call.run_id);
        match level {
            Level::Trace => tracing::trace!(target: "step", step, run, "{message}"),
            Level::Debug => tracing::debug!(target: "step", step, run, "{message}"),
            Level::Info => tracing::info!(target: "step", step, run, "{message}"),
            Level::Warn => tracing::warn!(target: "step", step, run, "{message}"),
            Level::Error => tracing::error!(target: "step", step, run, "{message}"),
        }
        Ok(())
    }
}
