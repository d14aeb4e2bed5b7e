//! A workflow ready to run: a validated manifest whose components are loaded
//! and bound, with their grants, to the host's services.

use std::sync::Arc;

use crate::capabilities::{EntityStore, Services};
use crate::manifest::Manifest;
use crate::saga::{Saga, Step};
use crate::wasm::{LoadError, Runtime, WasmStep};

/// A manifest bound to its steps.
pub struct LoadedWorkflow {
    /// The manifest.
    pub manifest: Manifest,
    /// Its saga, ready to run.
    pub saga: Saga,
}

/// Loads every component of `manifest` (compiled once, cached on disk) and
/// binds each step to `entities` and its manifest's `[config]`.
pub fn load(
    manifest: Manifest,
    runtime: &Arc<Runtime>,
    entities: Arc<EntityStore>,
) -> Result<LoadedWorkflow, LoadError> {
    let mut steps: Vec<Arc<dyn Step>> = Vec::with_capacity(manifest.components.len());
    for spec in &manifest.components {
        let component = runtime.load(&spec.path)?;
        let services = Services {
            entities: entities.clone(),
            config: spec.config.clone(),
        };
        steps.push(Arc::new(WasmStep::new(
            runtime.clone(),
            component,
            services,
            spec.grants.clone(),
            spec.limits,
        )));
    }
    let saga = Saga::new(manifest.workflow.clone(), steps);
    Ok(LoadedWorkflow { manifest, saga })
}
