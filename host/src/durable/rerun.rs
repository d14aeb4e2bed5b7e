//! Running a run again (`host runs rerun`): a new run of the same workflow,
//! loaded from its manifest as it is now (so a fix applies), with the
//! original's input (or another) and metadata, linked to the original
//! (`rerun_of`; the original's report lists its `reruns`). It may not
//! change the original run.

use std::sync::Arc;

use super::{Begun, DurableError, Host, Origin, Started};
use crate::json::Json;
use crate::manifest::{self, LoadOptions};
use crate::saga::{RunReport, RunRequest};
use crate::workflow::{self, LoadedWorkflow};

impl Host {
    /// Starts a new run like `run` (any status), with `input` instead of
    /// its input when given; `detach_background` as for a start. Returns
    /// the new run's report.
    pub async fn rerun(
        &self,
        run: &str,
        input: Option<Json>,
        detach_background: bool,
    ) -> Result<RunReport, DurableError> {
        let (loaded, begun, request) = self.begin_rerun(run, input)?;
        let started = self
            .complete(&loaded, begun, request, detach_background)
            .await?;
        Ok(match started {
            Started::Ran(report) | Started::Recorded(report) => {
                // The journal's report carries the link.
                self.report(&report.run)?
            }
        })
    }

    /// The first half of [`Host::rerun`]: loads the workflow and records the
    /// new run (the caller completes it).
    pub fn begin_rerun(
        &self,
        run: &str,
        input: Option<Json>,
    ) -> Result<(Arc<LoadedWorkflow>, Begun, RunRequest), DurableError> {
        let original = self.journal.run(run)?;
        let options = LoadOptions {
            require_components: true,
            extension_dirs: original.extension_dirs.clone(),
            ..crate::capabilities::registry::load_options()
        };
        let manifest = manifest::load(&original.manifest, &options).map_err(|errors| {
            DurableError::Manifest {
                run: run.to_string(),
                errors,
            }
        })?;
        if manifest.workflow.name != original.workflow {
            return Err(DurableError::Refused(format!(
                "run {run} is of the workflow '{}', but {} now defines '{}': rerun it from a manifest of that workflow",
                original.workflow,
                original.manifest.display(),
                manifest.workflow.name
            )));
        }
        let loaded = Arc::new(workflow::load(
            manifest,
            &self.runtime,
            self.entities.clone(),
        )?);
        let input = input.unwrap_or_else(|| original.input.clone());
        if let Some(schema) = &loaded.manifest.input_schema {
            let violations = schema.violations(input.value());
            if !violations.is_empty() {
                return Err(DurableError::Refused(format!(
                    "the input does not match the workflow's input-schema ({}):\n  {}",
                    schema.path().display(),
                    violations.join("\n  ")
                )));
            }
        }
        let mut request = RunRequest::new(input);
        request.metadata = original.metadata.clone();
        tracing::info!(run = %request.run_id, rerun_of = run, "rerun started");
        let begun = self.begin_with(
            &loaded,
            &original.extension_dirs,
            &request,
            Origin {
                rerun_of: Some(run.to_string()),
                ..Origin::default()
            },
        )?;
        Ok((loaded, begun, request))
    }
}
