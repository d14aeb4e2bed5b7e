//! `log`: a step's log lines go to the host's log (stderr), tagged with the
//! step. Every step may log: it has no grant.

use wasmtime::component::Linker;

use super::bindings::wasaga::step::log::{self, Host, Level};
use super::{Capabilities, CapabilityView, ViewOf};

/// Links `log`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, Capabilities>(linker, view)
}

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
