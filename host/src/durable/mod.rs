//! Durable runs: starts a run in the journal (once per transaction id),
//! executes it with every transition journaled, resumes unfinished runs from
//! their journal (pinned to the manifests they started with), cancels runs,
//! answers async steps, and rebuilds reports from the journal. How a host
//! holds its leases and takes over runs of dead hosts is in `leases`; what
//! an outside caller asks of a run (cancel it, answer its async step), in
//! `requests`; where its state lives, in `state`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capabilities::EntityStore;
use crate::journal::{
    CrashPoint, Journal, JournalError, JournalRecorder, LeaseKeeper, Observer, Owner,
    PinnedComponent, RecordKind, RunFilter, RunRecord, now_ms,
};
use crate::manifest::{self, LoadOptions, ManifestErrors, Snapshot};
use crate::saga::{CancelSignal, Durability, RunReport, RunRequest, RunStatus};
use crate::wasm::{LoadError, Runtime};
use crate::workflow::{self, LoadedWorkflow};

mod begin;
mod leases;
mod parking;
mod queue;
mod requests;
mod rerun;
mod schedules;
mod state;
mod timers;
mod watchers;

pub use begin::Begun;
use begin::Origin;
use leases::Renewal;
pub use leases::{LEASE, jittered};
pub use requests::{Answer, parse_answer_error};
pub use schedules::tick_transaction;
pub use state::{State, StateLocation, open_state, open_state_file};

/// A failure of the durable layer (not of a workflow).
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A run's pinned manifest no longer resolves.
    #[error("the manifest run {run} started with no longer loads:\n{errors}")]
    Manifest {
        /// The run.
        run: String,
        /// Why.
        errors: ManifestErrors,
    },
    /// A component failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The request does not fit the run's state; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The run's components hold other bytes than it started with; the
    /// operator has not accepted the change.
    #[error("{0}")]
    ChangedComponents(String),
}

impl DurableError {
    /// Whether another host took the run over while this one executed it.
    pub fn lease_lost(&self) -> bool {
        matches!(self, DurableError::Journal(JournalError::LeaseLost(_)))
    }
}

/// A component as a run was pinned to it, and as it is loaded now.
type ComponentChange = (PinnedComponent, PinnedComponent);

/// The components a run was pinned to that now hold other bytes.
fn changed_components(record: &RunRecord, workflow: &LoadedWorkflow) -> Vec<ComponentChange> {
    record
        .components
        .iter()
        .filter_map(|pinned| {
            let now = workflow.components.iter().find(|c| c.step == pinned.step)?;
            (now.hash != pinned.hash).then(|| (pinned.clone(), now.clone()))
        })
        .collect()
}

fn describe_changes(changed: &[ComponentChange]) -> String {
    changed
        .iter()
        .map(|(was, now)| {
            format!(
                "  step '{}' ({}): started with blake3 {}, the file is now blake3 {}",
                was.step,
                now.path.display(),
                was.hash,
                now.hash
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The durable host: journal, services and the WASM runtime of one state file.
pub struct Host {
    journal: Arc<dyn Journal>,
    entities: Arc<EntityStore>,
    runtime: Arc<Runtime>,
    owner: Owner,
    /// How long this host's leases last without renewal.
    lease: Duration,
    /// Until when (unix ms, this host's clock, with a margin) the last
    /// renewal of this host's leases holds.
    valid_until: Arc<std::sync::atomic::AtomicI64>,
    crash: Option<CrashPoint>,
    /// Workflows loaded from pinned manifests, by manifest hash.
    pinned: Mutex<HashMap<String, Arc<LoadedWorkflow>>>,
    renewal: Renewal,
    /// Hands a cancel written to the journal to the runs executing here.
    cancel_watch: tokio::task::JoinHandle<()>,
    observer: Option<Arc<dyn Observer>>,
    /// The spans of the runs executed here (`--otlp-endpoint`).
    spans: Option<Arc<crate::otel::RunSpans>>,
    /// Runs this process is executing right now. The lease says which
    /// process holds a run; this says whether this one is already at it, so
    /// a resume (e.g. the start-up sweep of `host serve`) never executes a
    /// run twice at once.
    executing: Executions,
    /// Resume runs whose components changed since they started (the
    /// operator said so: `--accept-changed-components`).
    accept_changed_components: std::sync::atomic::AtomicBool,
    /// Runs this process's sweep claimed and could not resume (a manifest
    /// that no longer loads, changed components): not claimed again by it.
    refused: Mutex<std::collections::HashSet<String>>,
    /// The dead-letter rule: a run taken over this many times from a host
    /// that died executing it is parked as `failed` instead of resumed.
    dead_letter_after: u32,
    /// Runs this process's sweep took over (for metrics).
    takeovers: std::sync::atomic::AtomicU64,
    /// Wakes the queue loop when a run of a workflow with `concurrency`
    /// ends here.
    promotions: tokio::sync::Notify,
}

/// How many times a run's host may die executing it before the run is
/// parked (`WASAGA_DEAD_LETTER_AFTER` changes it).
pub const DEAD_LETTER_AFTER: u32 = 5;

/// The runs this process executes, each with its cancel signal.
type Executions = Arc<Mutex<HashMap<String, CancelSignal>>>;

/// Marks a run as executing in this process until dropped.
#[derive(Debug)]
pub struct Executing {
    runs: Executions,
    run: String,
    /// Cancels the run's calls in flight.
    signal: CancelSignal,
}

impl Drop for Executing {
    fn drop(&mut self) {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.run);
    }
}

/// How often a run executing here looks for a cancel asked of another
/// process (which can only write it to the journal).
const CANCEL_POLL: Duration = Duration::from_secs(1);

impl Drop for Host {
    fn drop(&mut self) {
        self.renewal.stop();
        self.cancel_watch.abort();
    }
}

/// How a start ended.
pub enum Started {
    /// The run executed here (to its end, or until it paused).
    Ran(RunReport),
    /// Its transaction id had already run: the recorded result.
    Recorded(RunReport),
}

impl Started {
    /// The report, either way.
    pub fn report(self) -> RunReport {
        match self {
            Started::Ran(report) | Started::Recorded(report) => report,
        }
    }
}

impl Host {
    /// A host over `journal` and `entities` (normally in one state file),
    /// holding its leases for [`LEASE`].
    pub fn new(
        journal: Arc<dyn Journal>,
        entities: Arc<EntityStore>,
        runtime: Arc<Runtime>,
    ) -> Host {
        Host::with_lease(journal, entities, runtime, LEASE)
    }

    /// A host whose leases last `lease` without renewal.
    pub fn with_lease(
        journal: Arc<dyn Journal>,
        entities: Arc<EntityStore>,
        runtime: Arc<Runtime>,
        lease: Duration,
    ) -> Host {
        let owner = Owner::current();
        let executing = Executions::default();
        let valid_until = Arc::new(std::sync::atomic::AtomicI64::new(leases::counted_until(
            now_ms(),
            lease,
        )));
        let renewal = Renewal::start(
            journal.clone(),
            owner.clone(),
            executing.clone(),
            valid_until.clone(),
            lease,
        );
        let cancel_watch = {
            let (journal, executing) = (journal.clone(), executing.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CANCEL_POLL).await;
                    let runs: Vec<(String, CancelSignal)> = executing
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .filter(|(_, signal)| !signal.is_cancelled())
                        .map(|(run, signal)| (run.clone(), signal.clone()))
                        .collect();
                    for (run, signal) in runs {
                        if journal.cancel_requested(&run).unwrap_or(false) {
                            signal.cancel();
                        }
                    }
                }
            })
        };
        Host {
            journal,
            entities,
            runtime,
            owner,
            lease,
            valid_until,
            crash: CrashPoint::from_env(),
            pinned: Mutex::default(),
            renewal,
            cancel_watch,
            observer: None,
            spans: None,
            executing,
            accept_changed_components: Default::default(),
            refused: Mutex::default(),
            dead_letter_after: std::env::var("WASAGA_DEAD_LETTER_AFTER")
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEAD_LETTER_AFTER),
            takeovers: Default::default(),
            promotions: tokio::sync::Notify::new(),
        }
    }

    /// How many unfinished runs this process's sweep took over.
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// The entities store.
    pub fn entities(&self) -> &Arc<EntityStore> {
        &self.entities
    }

    /// The WASM runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Starts a run of `workflow`, unless its transaction id already ran:
    /// then its recorded result; or, if that run is still in flight
    /// elsewhere, its result once it ends.
    pub async fn start(
        &self,
        workflow: &Arc<LoadedWorkflow>,
        extension_dirs: &[PathBuf],
        request: RunRequest,
        detach_background: bool,
    ) -> Result<Started, DurableError> {
        let begun = self.begin(workflow, extension_dirs, &request).await?;
        self.complete(workflow, begun, request, detach_background)
            .await
    }

    /// The second half of [`Host::start`]: executes a fresh run, or answers
    /// for the existing run of its transaction id.
    pub async fn complete(
        &self,
        workflow: &LoadedWorkflow,
        begun: Begun,
        request: RunRequest,
        detach_background: bool,
    ) -> Result<Started, DurableError> {
        match begun {
            Begun::Fresh(run, executing, epoch) => {
                let request = RunRequest {
                    trace_context: self.trace_context_of(&request),
                    ..request
                };
                let (base, recorder) =
                    self.durability(&run, crate::saga::History::default(), 0, epoch);
                let durability = Durability {
                    detach_background,
                    interrupt: executing.signal.clone(),
                    ..base
                };
                let ran = self.execute(workflow, request, durability, &recorder).await;
                drop(executing);
                match ran {
                    // Another host took it over (this one was paused or cut
                    // off): its result is theirs.
                    Err(e) if e.lease_lost() => {
                        tracing::warn!(run, "{e}");
                        Ok(Started::Recorded(self.wait_final(&run).await?))
                    }
                    ran => Ok(Started::Ran(ran?)),
                }
            }
            Begun::Queued(run) => {
                tracing::info!(run, "queued: its concurrency key is at its limit");
                Ok(Started::Recorded(self.report(&run)?))
            }
            Begun::Existing(existing) if existing.status == RunStatus::Queued => {
                Ok(Started::Recorded(self.report(&existing.id)?))
            }
            Begun::Existing(existing) if existing.status.is_final() => {
                tracing::info!(run = %existing.id, transaction = %existing.transaction_id, "this transaction already ran: its recorded result");
                Ok(Started::Recorded(self.report(&existing.id)?))
            }
            Begun::Existing(existing) if self.busy_elsewhere(&existing) => {
                tracing::info!(run = %existing.id, "this transaction is running in another process: waiting for it");
                Ok(Started::Recorded(self.wait_final(&existing.id).await?))
            }
            Begun::Existing(existing) => {
                tracing::info!(run = %existing.id, "this transaction's run was left unfinished: resuming it");
                Ok(Started::Recorded(self.resume(&existing.id).await?))
            }
        }
    }

    /// How a run executed here is recorded: its recorder (kept by the host,
    /// which writes the run's end with the last records), in a
    /// `Durability` for the orchestrator.
    fn durability(
        &self,
        run: &str,
        history: crate::saga::History,
        elapsed_ms: i64,
        epoch: u64,
    ) -> (Durability, Arc<JournalRecorder>) {
        let recorder = Arc::new(
            JournalRecorder::new(
                self.journal.clone(),
                run,
                epoch,
                history.last_seq,
                self.crash.clone(),
            )
            .kept(LeaseKeeper {
                owner: self.owner.clone(),
                lease: self.lease,
                valid_until: self.valid_until.clone(),
            })
            .observed(self.observer.clone()),
        );
        let durability = Durability {
            recorder: recorder.clone(),
            history,
            elapsed: Duration::from_millis(elapsed_ms.max(0) as u64),
            detach_background: false,
            cancel: false,
            interrupt: CancelSignal::default(),
            end_writes_last_records: true,
            clock: crate::saga::Clock::system(),
        };
        (durability, recorder)
    }

    /// Runs (or resumes) a leased run to its end or pause, records how it
    /// ended, and hands its events to the subscribers.
    async fn execute(
        &self,
        workflow: &LoadedWorkflow,
        request: RunRequest,
        durability: Durability,
        recorder: &JournalRecorder,
    ) -> Result<RunReport, DurableError> {
        let run_id = request.run_id.clone();
        let report = workflow.saga.run_durably(request, durability).await;
        // The last call's end and the run's end: one commit.
        recorder.finish_run_queued(&report).await?;
        if let Some(observer) = &self.observer {
            observer.status(&run_id, report.status);
        }
        if report.status.is_final() && workflow.manifest.concurrency.is_some() {
            self.slot_freed();
        }
        if report.status.is_final() {
            if !workflow.subscribers.is_empty() {
                let delivered = workflow
                    .subscribers
                    .deliver(&report.workflow, &report.run, &report.all_events)
                    .await;
                tracing::info!(
                    ok = delivered.ok,
                    failed = delivered.failed,
                    "events delivered to subscribers"
                );
            }
            if let Some(retention) = workflow.manifest.retention {
                let pruned = self.journal.prune(
                    now_ms() - retention.as_millis() as i64,
                    Some(&report.workflow),
                )?;
                if pruned > 0 {
                    tracing::info!(
                        pruned,
                        "finished runs past the workflow's retention were pruned"
                    );
                }
            }
        }
        Ok(report)
    }

    /// The workflow a run was started with (its pinned manifests).
    fn pinned_workflow(&self, record: &RunRecord) -> Result<Arc<LoadedWorkflow>, DurableError> {
        if let Some(loaded) = self
            .pinned
            .lock()
            .expect("pinned lock")
            .get(&record.manifest_hash)
        {
            return Ok(loaded.clone());
        }
        let snapshot = Snapshot::new(self.journal.sources(&record.manifest_hash)?);
        let options = LoadOptions {
            require_components: true,
            extension_dirs: record.extension_dirs.clone(),
            files: Arc::new(snapshot),
            ..crate::capabilities::registry::load_options()
        };
        let manifest = manifest::load(&record.manifest, &options).map_err(|errors| {
            DurableError::Manifest {
                run: record.id.clone(),
                errors,
            }
        })?;
        let loaded = Arc::new(workflow::load(
            manifest,
            &self.runtime,
            self.entities.clone(),
        )?);
        self.pinned
            .lock()
            .expect("pinned lock")
            .insert(record.manifest_hash.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Resumes runs whose components changed since they started, instead of
    /// refusing them (each acceptance is recorded in the run's history).
    pub fn accept_changed_components(&self, accept: bool) {
        self.accept_changed_components
            .store(accept, std::sync::atomic::Ordering::Relaxed);
    }

    fn request_of(record: &RunRecord) -> RunRequest {
        RunRequest {
            run_id: record.id.clone(),
            transaction_id: record.transaction_id.clone(),
            input: record.input.clone(),
            metadata: record.metadata.clone(),
            trace_context: record.trace_context(),
        }
    }

    /// Continues an unfinished run from its journal: forward if it was
    /// running, compensating if it was compensating. A settled call is not
    /// called again; one that was in flight is called again with the same
    /// idempotency key and the next attempt number.
    pub async fn resume(&self, run: &str) -> Result<RunReport, DurableError> {
        self.continue_run(run, false).await
    }

    async fn continue_run(&self, run: &str, cancel: bool) -> Result<RunReport, DurableError> {
        let executing = self.executing_or_refuse(run)?;
        self.continue_marked(run, cancel, executing, None).await
    }

    /// Continues a run marked as executing here: claims it (unless
    /// `claimed` is the epoch this host already claimed it under), then
    /// executes it from its history.
    async fn continue_marked(
        &self,
        run: &str,
        cancel: bool,
        executing: Executing,
        claimed: Option<u64>,
    ) -> Result<RunReport, DurableError> {
        let record = self.journal.run(run)?;
        if record.status.is_final() {
            return Ok(self.report(run)?);
        }
        // A cancel asked while the run was elsewhere (its host then died) is
        // kept.
        let cancel = cancel || record.cancel_requested;
        // Before the claim: a refused resume leaves the run as it was.
        let (workflow, changed) = self.resumable(&record)?;
        let epoch = match claimed {
            Some(epoch) => epoch,
            None => self
                .journal
                .claim(run, &self.owner, self.lease)?
                .ok_or_else(|| {
                    DurableError::Refused(format!(
                        "run {run} is being executed by another process ({})",
                        record.lease_owner.as_deref().unwrap_or("unknown")
                    ))
                })?,
        };
        // After the claim: its crash count includes this take-over.
        let claimed_record = self.journal.run(run)?;
        if claimed_record.crashes >= self.dead_letter_after {
            return self.park(run, epoch, &claimed_record).await;
        }
        // A compensating run stays so (its history says where it is).
        let status = match record.status {
            RunStatus::Compensating => RunStatus::Compensating,
            _ => RunStatus::Running,
        };
        self.journal.set_status(run, epoch, status)?;
        let mut history = self.journal.history(run)?;
        if !changed.is_empty() {
            // Accepted: said in the run's history, and pinned from now on.
            tracing::warn!(
                run,
                "resuming with changed components, as the operator accepted:\n{}",
                describe_changes(&changed)
            );
            let event = crate::saga::Event {
                name: "run.components-accepted".into(),
                data: crate::json::Json::from_value(serde_json::json!({
                    "components": changed.iter().map(|(was, now)| serde_json::json!({
                        "step": was.step, "path": now.path, "was": was.hash, "now": now.hash,
                    })).collect::<Vec<_>>(),
                })),
                step: None,
                lifecycle: false,
            };
            self.journal.append(
                run,
                epoch,
                &[(history.last_seq + 1, RecordKind::Event(event))],
            )?;
            self.journal
                .set_components(run, epoch, &workflow.components)?;
            history = self.journal.history(run)?;
        }
        let (base, recorder) = self.durability(run, history, now_ms() - record.created_at, epoch);
        let durability = Durability {
            cancel,
            interrupt: executing.signal.clone(),
            ..base
        };
        self.execute(&workflow, Self::request_of(&record), durability, &recorder)
            .await?;
        Ok(self.report(run)?)
    }

    /// The workflow a run resumes with, and its components that changed
    /// since it started; refused (changing nothing) when some did and the
    /// operator has not accepted it.
    fn resumable(
        &self,
        record: &RunRecord,
    ) -> Result<(Arc<LoadedWorkflow>, Vec<ComponentChange>), DurableError> {
        let workflow = self.pinned_workflow(record)?;
        let changed = changed_components(record, &workflow);
        let accepted = self
            .accept_changed_components
            .load(std::sync::atomic::Ordering::Relaxed);
        // A run that has not started a call (one that waited in a queue
        // while its components were rebuilt) has nothing half-finished:
        // it takes the components as they are.
        if !changed.is_empty() && !accepted && !self.journal.records(&record.id)?.is_empty() {
            let run = &record.id;
            return Err(DurableError::ChangedComponents(format!(
                "run {run} started with other code than its components hold now:\n{}\n\
                 resuming would run new code over a half-finished saga: restore the components it \
                 started with, or accept the change with `host resume --accept-changed-components {run}` \
                 (or `host serve --accept-changed-components`)",
                describe_changes(&changed)
            )));
        }
        Ok((workflow, changed))
    }

    /// Resumes every unfinished run no live process holds (not those waiting
    /// for an answer, unless their time has come); returns each run's id and
    /// how it went.
    pub async fn resume_all(
        &self,
    ) -> Result<Vec<(String, Result<RunReport, DurableError>)>, DurableError> {
        let mut results = Vec::new();
        for status in [RunStatus::Running, RunStatus::Compensating] {
            let filter = RunFilter {
                status: Some(status),
                limit: Some(10_000),
                ..RunFilter::default()
            };
            for record in self.journal.list(&filter)? {
                if self.busy_elsewhere(&record) {
                    continue;
                }
                tracing::info!(run = %record.id, workflow = %record.workflow, status = status.as_str(), "resuming an unfinished run");
                let result = self.resume(&record.id).await;
                results.push((record.id, result));
            }
        }
        self.wake_due_here(&mut results).await?;
        self.promote_here(&mut results).await?;
        Ok(results)
    }

    /// Marks `run` as executing here, unless it already is.
    fn mark_executing(&self, run: &str) -> Option<Executing> {
        let mut runs = self.executing.lock().unwrap_or_else(|e| e.into_inner());
        if runs.contains_key(run) {
            return None;
        }
        let signal = CancelSignal::default();
        runs.insert(run.to_string(), signal.clone());
        Some(Executing {
            runs: self.executing.clone(),
            run: run.to_string(),
            signal,
        })
    }

    /// Interrupts `run` if this process executes it; says whether it did.
    fn interrupt(&self, run: &str) -> bool {
        let runs = self.executing.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(run).map(CancelSignal::cancel).is_some()
    }

    fn executing_or_refuse(&self, run: &str) -> Result<Executing, DurableError> {
        self.mark_executing(run).ok_or_else(|| {
            DurableError::Refused(format!(
                "run {run} is being executed by this process right now"
            ))
        })
    }

    /// Whether someone else is at the run: another live process, or another
    /// task of this one.
    fn busy_elsewhere(&self, record: &RunRecord) -> bool {
        record.held_by_other(&self.owner, now_ms())
            || self
                .executing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&record.id)
    }

    /// Waits until a run held by another process ends; returns its report.
    pub async fn wait_final(&self, run: &str) -> Result<RunReport, DurableError> {
        loop {
            let record = self.journal.run(run)?;
            if record.status.is_final() || record.status == RunStatus::Waiting {
                return Ok(self.report(run)?);
            }
            if !self.busy_elsewhere(&record) {
                // Its process died: finish it here, unless another host's
                // sweep was quicker (then wait for that one).
                match self.resume(run).await {
                    Err(DurableError::Refused(_)) => {}
                    other => return other,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A run's report, rebuilt from the journal (every attempt of every life).
    pub fn report(&self, run: &str) -> Result<RunReport, JournalError> {
        crate::journal::report_from_journal(self.journal.as_ref(), run)
    }
}
