//! Recording a new run: the run's row built from its workflow and request,
//! marked as executing here, and journaled (as a task, or on the caller's
//! thread for reruns and ticks); what the start became. It may not execute
//! runs (`Host::complete` does).

use std::path::PathBuf;

use super::{DurableError, Executing, Host};
use crate::journal::{Begin, NewRun, RunRecord};
use crate::saga::RunRequest;
use crate::workflow::LoadedWorkflow;

/// Where a run comes from, besides a caller's request.
#[derive(Debug, Default)]
pub(super) struct Origin {
    /// The run it runs again.
    pub(super) rerun_of: Option<String>,
    /// The schedule's tick it is for (unix ms).
    pub(super) tick: Option<i64>,
}

/// A run recorded by [`Host::begin`].
#[derive(Debug)]
pub enum Begun {
    /// A new run with this id, marked as executing here, under this lease epoch.
    Fresh(String, Executing, u64),
    /// A new run with this id, queued behind the runs of its key.
    Queued(String),
    /// The run its transaction id already has.
    Existing(Box<RunRecord>),
}

impl Begun {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        match self {
            Begun::Fresh(id, ..) | Begun::Queued(id) => id,
            Begun::Existing(record) => &record.id,
        }
    }
}

impl Host {
    /// The first half of [`Host::start`]: records the run (or finds the run
    /// of its transaction id). The run's id is then known. The start waits
    /// for its commit as a task (on SQLite, a commit shared with other
    /// runs' writes: see [`Journal::begin_queued`]). Not cancel-safe: a
    /// caller that may drop it (a request whose client may hang up) calls
    /// it in a task of its own, as `host serve` does.
    pub async fn begin(
        &self,
        workflow: &LoadedWorkflow,
        extension_dirs: &[PathBuf],
        request: &RunRequest,
    ) -> Result<Begun, DurableError> {
        let (new, executing) =
            self.new_run(workflow, extension_dirs, request, Origin::default())?;
        let begin = self
            .journal
            .begin_queued(&new, &self.owner, self.lease)
            .await?;
        Ok(self.begun(new, executing, begin))
    }

    /// [`Host::begin`], for a run of `origin` (a rerun, a schedule's tick),
    /// waiting on the caller's thread: those starts come one at a time, not
    /// at the rate runs are started, and a schedule's tick is recorded from
    /// synchronous code (`begin_tick`).
    pub(super) fn begin_with(
        &self,
        workflow: &LoadedWorkflow,
        extension_dirs: &[PathBuf],
        request: &RunRequest,
        origin: Origin,
    ) -> Result<Begun, DurableError> {
        let (new, executing) = self.new_run(workflow, extension_dirs, request, origin)?;
        let begin = self.journal.begin(&new, &self.owner, self.lease)?;
        Ok(self.begun(new, executing, begin))
    }

    /// A new run of `workflow` for `request`, marked as executing here.
    fn new_run(
        &self,
        workflow: &LoadedWorkflow,
        extension_dirs: &[PathBuf],
        request: &RunRequest,
        origin: Origin,
    ) -> Result<(NewRun, Executing), DurableError> {
        let manifest = &workflow.manifest;
        let new = NewRun {
            components: workflow.components.clone(),
            id: request.run_id.clone(),
            transaction_id: request.transaction_id.clone(),
            workflow: manifest.workflow.name.clone(),
            manifest: manifest.source.path.clone(),
            sources: manifest.sources.clone(),
            extension_dirs: extension_dirs.to_vec(),
            input: request.input.clone(),
            metadata: request.metadata.clone(),
            // A tick starts one run, whatever the workflow says of repeats.
            idempotent: manifest.idempotent || origin.tick.is_some(),
            rerun_of: origin.rerun_of,
            tick: origin.tick,
            queue: self.queue_for(workflow, &request.input)?,
            trace_context: self.trace_context_of(request),
        };
        // Marked before it is journaled, so no resume can see it unmarked.
        let executing = self
            .mark_executing(&new.id)
            .ok_or_else(|| DurableError::Refused(format!("run {} already exists", new.id)))?;
        Ok((new, executing))
    }

    /// What a start of `new` became.
    fn begun(&self, new: NewRun, executing: Executing, begin: Begin) -> Begun {
        if let (Some(spans), Some(context), Begin::Started { .. } | Begin::Queued) =
            (&self.spans, new.trace_context, &begin)
        {
            spans.began(&new.id, &new.workflow, context);
        }
        match begin {
            Begin::Started { epoch } => Begun::Fresh(new.id, executing, epoch),
            Begin::Existing(existing) => Begun::Existing(existing),
            // Not executed here until its key has room.
            Begin::Queued => Begun::Queued(new.id),
        }
    }
}
