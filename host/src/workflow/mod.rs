//! A loaded workflow, ready to run: a resolved [`App`] whose components are
//! loaded and bound, with their grants, to the host's services, and whose
//! built-in steps (`query`) are assembled beside them; step schemas checked
//! around each call.

use std::sync::Arc;

use futures::future::BoxFuture;

mod query;

pub use query::QueryStep;

use crate::app::{App, StepKind};
use crate::capabilities::{EntityStore, Services};
use crate::journal::PinnedComponent;
use crate::json::Json;
use crate::saga::{FailureKind, Invoked, Saga, Step, StepCall, StepFailure};
use crate::schema::Schema;
use crate::subscribers::Subscribers;
use crate::wasm::{LoadError, Runtime, WasmStep};

/// A manifest bound to its steps.
pub struct LoadedWorkflow {
    /// The manifest.
    pub manifest: App,
    /// Its saga, ready to run.
    pub saga: Saga,
    /// Who receives its runs' events.
    pub subscribers: Subscribers,
    /// Each component step's file and content hash, as loaded: what a run
    /// started with it pins.
    pub components: Vec<PinnedComponent>,
}

/// Loads every component of `manifest` (compiled once, cached on disk) and
/// binds each step to `entities` and its manifest's `[config]`.
pub fn load(
    manifest: App,
    runtime: &Arc<Runtime>,
    entities: Arc<EntityStore>,
) -> Result<LoadedWorkflow, LoadError> {
    let mut steps: Vec<Arc<dyn Step>> = Vec::with_capacity(manifest.components.len());
    let mut components = Vec::new();
    // Every declared secret has its value before any step runs.
    let secrets = Arc::new(
        runtime
            .secrets()
            .resolve(&manifest.secrets)
            .map_err(LoadError::Secrets)?,
    );
    for spec in &manifest.components {
        let step: Arc<dyn Step> = match &spec.kind {
            StepKind::Component { path, .. } => {
                let component = runtime.load(path)?;
                components.push(PinnedComponent {
                    step: spec.step.clone(),
                    path: path.clone(),
                    hash: component.hash.clone(),
                });
                let services = Services {
                    entities: entities.clone(),
                    config: spec.config.clone(),
                    secrets: secrets.clone(),
                    http: runtime.http().clone(),
                };
                Arc::new(WasmStep::new(
                    runtime.clone(),
                    component,
                    services,
                    spec.grants.clone(),
                    spec.limits,
                ))
            }
            StepKind::Query(query) => Arc::new(QueryStep::new(entities.clone(), query.clone())),
        };
        let step = if spec.input_schema.is_some() || spec.output_schema.is_some() {
            Arc::new(Checked {
                inner: step,
                input: spec.input_schema.clone(),
                output: spec.output_schema.clone(),
            })
        } else {
            step
        };
        steps.push(step);
    }
    let subscribers = Subscribers::load(&manifest.subscribers, runtime)?;
    let saga = Saga::new(manifest.workflow.clone(), steps);
    Ok(LoadedWorkflow {
        manifest,
        saga,
        subscribers,
        components,
    })
}

/// A step whose input and output are checked against JSON Schemas.
struct Checked {
    inner: Arc<dyn Step>,
    input: Option<Arc<Schema>>,
    output: Option<Arc<Schema>>,
}

fn violation(
    kind: FailureKind,
    what: &str,
    call: &StepCall,
    schema: &Schema,
    violations: &[String],
) -> StepFailure {
    StepFailure::new(
        kind,
        format!(
            "the {what} of step '{}' does not match {}: {}",
            call.node,
            schema.path().display(),
            violations.join("; ")
        ),
    )
    .permanent()
}

impl Step for Checked {
    fn invoke<'a>(
        &'a self,
        input: &'a Json,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<Invoked, StepFailure>> {
        Box::pin(async move {
            if let Some(schema) = &self.input {
                let violations = schema.violations(input.value());
                if !violations.is_empty() {
                    return Err(violation(
                        FailureKind::InvalidData,
                        "input",
                        call,
                        schema,
                        &violations,
                    ));
                }
            }
            let result = self.inner.invoke(input, call).await?;
            if let (
                Some(schema),
                Invoked::Done {
                    output,
                    compensation,
                },
            ) = (&self.output, &result)
            {
                let violations = schema.violations(output.value());
                if !violations.is_empty() {
                    // The step did its work: its compensation must undo it.
                    let mut failure = violation(
                        FailureKind::InvalidOutput,
                        "output",
                        call,
                        schema,
                        &violations,
                    );
                    failure.compensation_data =
                        Some(compensation.clone().unwrap_or_else(|| output.clone()));
                    return Err(failure);
                }
            }
            Ok(result)
        })
    }

    fn compensate<'a>(
        &'a self,
        data: Option<&'a Json>,
        call: &'a StepCall,
    ) -> BoxFuture<'a, Result<(), StepFailure>> {
        self.inner.compensate(data, call)
    }
}
