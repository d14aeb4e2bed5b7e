//! Durable runs: starts a run in the journal (once per transaction id),
//! executes it with every transition journaled, resumes unfinished runs from
//! their journal (pinned to the manifests they started with), cancels runs,
//! answers async steps, and rebuilds reports from the journal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capabilities::EntityStore;
use crate::journal::{
    Begin, CrashPoint, Journal, JournalError, JournalRecorder, LeaseKeeper, NewRun, Observer,
    Owner, PinnedComponent, RecordKind, RunFilter, RunRecord, now_ms,
};
use crate::json::Json;
use crate::manifest::{self, LoadOptions, ManifestErrors, Snapshot};
use crate::saga::{
    Action, CallRecord, CancelSignal, Durability, FailureKind, RunReport, RunRequest, RunStatus,
    StepFailure,
};
use crate::wasm::{LoadError, Runtime};
use crate::workflow::{self, LoadedWorkflow};

/// How long a lease lasts without renewal (renewed every third of it): how
/// long, at most, the runs of a host that vanished wait before another host
/// takes them over (on one machine, a dead process's runs are taken at once).
pub const LEASE: Duration = Duration::from_secs(10);

/// How many orphaned runs one sweep claims at most.
const SWEEP_BATCH: usize = 32;

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
}

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
        self.renewal
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.renewal.thread.thread().unpark();
        self.cancel_watch.abort();
    }
}

/// The thread renewing a host's leases, told to stop when the host goes.
struct Renewal {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
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

/// A run recorded by [`Host::begin`].
#[derive(Debug)]
pub enum Begun {
    /// A new run with this id, marked as executing here, under this lease epoch.
    Fresh(String, Executing, u64),
    /// The run its transaction id already has.
    Existing(Box<RunRecord>),
}

impl Begun {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        match self {
            Begun::Fresh(id, ..) => id,
            Begun::Existing(record) => &record.id,
        }
    }
}

/// The answer to a waiting async step.
#[derive(Debug, Clone)]
pub enum Answer {
    /// It succeeded with this output.
    Succeed(Json),
    /// It failed.
    Fail(StepFailure),
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
        // A lease renewed at `t` holds until `t + lease` by the journal's
        // clock; this host counts on it until four fifths of that.
        let margin = move |at: i64| at + (lease.as_millis() as i64) * 4 / 5;
        let valid_until = Arc::new(std::sync::atomic::AtomicI64::new(margin(now_ms())));
        // Renews the leases of the runs executing here (only those: a run
        // this process holds but no longer executes expires, and a sweep
        // takes it), on a thread of its own: the async workers may all be
        // busy in blocking journal calls, and a late renewal loses leases.
        let renewal = {
            let (journal, owner, executing, valid_until) = (
                journal.clone(),
                owner.clone(),
                executing.clone(),
                valid_until.clone(),
            );
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name("wasaga-leases".into())
                .spawn(move || {
                    loop {
                        std::thread::park_timeout(lease / 3);
                        if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                            return;
                        }
                        let runs: Vec<String> = executing
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .keys()
                            .cloned()
                            .collect();
                        let at = now_ms();
                        match journal.renew(&owner, lease, &runs) {
                            Ok(_) => {
                                valid_until.store(margin(at), std::sync::atomic::Ordering::SeqCst)
                            }
                            // Past `valid_until` each run's recorder renews
                            // its own lease before it writes, or stops the run.
                            Err(e) => tracing::warn!("could not renew leases: {e}"),
                        }
                    }
                })
                .expect("a thread for lease renewals");
            Renewal { stop, thread }
        };
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
            executing,
            accept_changed_components: Default::default(),
            refused: Mutex::default(),
        }
    }

    /// Takes over, as long as the returned task runs, the runs of hosts
    /// that died (on this machine: at once; elsewhere: once their lease
    /// expired) and runs left for later (a detached background step): every
    /// `poll` (with jitter, so hosts do not sweep in step) it claims a batch
    /// and resumes each run of it.
    pub fn sweep(self: &Arc<Self>, poll: Duration) -> tokio::task::JoinHandle<()> {
        let host = self.clone();
        tokio::spawn(async move {
            loop {
                let skip: Vec<String> = {
                    let executing = host.executing.lock().unwrap_or_else(|e| e.into_inner());
                    let refused = host.refused.lock().unwrap_or_else(|e| e.into_inner());
                    executing.keys().chain(refused.iter()).cloned().collect()
                };
                match host
                    .journal
                    .claim_orphans(&host.owner, host.lease, SWEEP_BATCH, &skip)
                {
                    Ok(claimed) => {
                        for (run, epoch) in claimed {
                            let host = host.clone();
                            tokio::spawn(async move {
                                tracing::info!(
                                    run,
                                    "taking over an unfinished run no live host holds"
                                );
                                if let Err(e) = host.resume_claimed(&run, epoch).await {
                                    tracing::warn!(run, "could not resume the run: {e}");
                                    // What a retry cannot mend is left to an
                                    // operator; anything else (the database
                                    // away for a moment, say) is claimed again
                                    // once the lease taken here expires.
                                    if matches!(
                                        e,
                                        DurableError::Manifest { .. }
                                            | DurableError::Load(_)
                                            | DurableError::ChangedComponents(_)
                                    ) {
                                        host.refused
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner())
                                            .insert(run);
                                    }
                                }
                            });
                        }
                    }
                    Err(e) => tracing::warn!("could not look for unfinished runs: {e}"),
                }
                // Jitter from the clock's low bits: between half and all of `poll`.
                let jitter = (crate::journal::now_us() as u64 % 1000) as f64 / 2000.0;
                tokio::time::sleep(poll.mul_f64(0.5 + jitter)).await;
            }
        })
    }

    /// Resumes a run this host's sweep claimed (under `epoch`).
    async fn resume_claimed(&self, run: &str, epoch: u64) -> Result<RunReport, DurableError> {
        let executing = self.executing_or_refuse(run)?;
        self.continue_marked(run, false, executing, Some(epoch))
            .await
    }

    /// Tells `observer` about every transition of the runs this host executes.
    pub fn observed(mut self, observer: Arc<dyn Observer>) -> Host {
        self.observer = Some(observer);
        self
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
        let begun = self.begin(workflow, extension_dirs, &request)?;
        self.complete(workflow, begun, request, detach_background)
            .await
    }

    /// The first half of [`Host::start`]: records the run (or finds the run
    /// of its transaction id). The run's id is then known.
    pub fn begin(
        &self,
        workflow: &LoadedWorkflow,
        extension_dirs: &[PathBuf],
        request: &RunRequest,
    ) -> Result<Begun, DurableError> {
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
            idempotent: manifest.idempotent,
        };
        // Marked before it is journaled, so no resume can see it unmarked.
        let executing = self
            .mark_executing(&new.id)
            .ok_or_else(|| DurableError::Refused(format!("run {} already exists", new.id)))?;
        Ok(match self.journal.begin(&new, &self.owner, self.lease)? {
            Begin::Started { epoch } => Begun::Fresh(new.id, executing, epoch),
            Begin::Existing(existing) => Begun::Existing(existing),
        })
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
                let durability = Durability {
                    detach_background,
                    interrupt: executing.signal.clone(),
                    ..self.durability(&run, crate::saga::History::default(), 0, epoch)
                };
                let ran = self.execute(workflow, request, durability, epoch).await;
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

    fn durability(
        &self,
        run: &str,
        history: crate::saga::History,
        elapsed_ms: i64,
        epoch: u64,
    ) -> Durability {
        Durability {
            recorder: Arc::new(
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
            ),
            history,
            elapsed: Duration::from_millis(elapsed_ms.max(0) as u64),
            detach_background: false,
            cancel: false,
            interrupt: CancelSignal::default(),
        }
    }

    /// Runs (or resumes) a leased run to its end or pause, records how it
    /// ended, and hands its events to the subscribers.
    async fn execute(
        &self,
        workflow: &LoadedWorkflow,
        request: RunRequest,
        durability: Durability,
        epoch: u64,
    ) -> Result<RunReport, DurableError> {
        let run_id = request.run_id.clone();
        let report = workflow.saga.run_durably(request, durability).await;
        self.journal.finish(&run_id, epoch, &report)?;
        if let Some(observer) = &self.observer {
            observer.status(&run_id, report.status);
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
        let durability = Durability {
            cancel,
            interrupt: executing.signal.clone(),
            ..self.durability(run, history, now_ms() - record.created_at, epoch)
        };
        self.execute(&workflow, Self::request_of(&record), durability, epoch)
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
        if !changed.is_empty() && !accepted {
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
    /// for an answer); returns each run's id and how it went.
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
        Ok(results)
    }

    /// Cancels a run: no new call starts, and everything it did is
    /// compensated. Refused for a failed run (its compensation already
    /// failed) and for one already compensated.
    pub async fn cancel(&self, run: &str) -> Result<RunReport, DurableError> {
        let mut record = self.journal.run(run)?;
        match record.status {
            RunStatus::Failed => {
                return Err(DurableError::Refused(format!(
                    "run {run} failed: a compensation already failed ({}); cancelling would not undo more. Fix the cause, then compensate by hand",
                    record
                        .error
                        .as_ref()
                        .map_or_else(String::new, |e| e.message.clone())
                )));
            }
            RunStatus::Reverted | RunStatus::Cancelled => {
                return Err(DurableError::Refused(format!(
                    "run {run} is already {}: everything it did was compensated",
                    record.status.as_str()
                )));
            }
            _ => {}
        }
        if self.busy_elsewhere(&record) {
            // Journaled for the recorder, which reads it with every commit;
            // a call in flight is interrupted at once here, or within a
            // second by the process executing it.
            self.journal.request_cancel(run)?;
            self.interrupt(run);
            let report = self.wait_final(run).await?;
            if !matches!(report.status, RunStatus::Waiting | RunStatus::Done) {
                return Ok(report);
            }
            // It paused or finished before it saw the cancel: cancel it here
            // (found in review: the answer said "waiting" while the cancel
            // stayed pending for a later answer to act on).
            record = self.journal.run(run)?;
        }
        // Refused before anything changes if it cannot resume here.
        self.resumable(&record)?;
        // Journaled first: whoever continues the run (this host, or another
        // after this one died) compensates it.
        self.journal.request_cancel(run)?;
        if record.status == RunStatus::Done {
            // A finished run is reopened for its compensation, leased here
            // at once.
            let executing = self.executing_or_refuse(run)?;
            let Some(epoch) = self.journal.reopen(run, &self.owner, self.lease)? else {
                return Err(DurableError::Refused(format!(
                    "run {run} is being cancelled by another request"
                )));
            };
            return self
                .continue_marked(run, true, executing, Some(epoch))
                .await;
        }
        self.continue_run(run, true).await
    }

    /// Records the answer to a waiting async step, then continues the run.
    pub async fn answer(
        &self,
        run: &str,
        step: &str,
        answer: Answer,
    ) -> Result<RunReport, DurableError> {
        // Taken first: an answer is recorded only for a run no one executes.
        let executing = self.executing_or_refuse(run)?;
        let record = self.journal.run(run)?;
        if record.status.is_final() {
            return Err(DurableError::Refused(format!(
                "run {run} is {}: it waits for nothing",
                record.status.as_str()
            )));
        }
        let history = self.journal.history(run)?;
        let waiting: Vec<String> = history.waiting_nodes();
        let Some(call) = history
            .call(step, Action::Invoke)
            .filter(|c| c.waiting.is_some() && c.settled.is_none())
        else {
            let known = if history.call(step, Action::Invoke).is_some() {
                format!("step '{step}' of run {run} is not waiting for an answer")
            } else {
                format!("run {run} has no step '{step}' that ran")
            };
            let hint = if waiting.is_empty() {
                "no step of it is waiting".to_string()
            } else {
                format!("waiting: {}", waiting.join(", "))
            };
            return Err(DurableError::Refused(format!("{known} ({hint})")));
        };
        let Some(epoch) = self.journal.claim(run, &self.owner, self.lease)? else {
            return Err(DurableError::Refused(format!(
                "run {run} is being executed by another process"
            )));
        };
        // `running` before the answer is recorded: a host that dies in
        // between leaves a run the sweep resumes (it waits again for the
        // answer), never a `waiting` run whose call already settled.
        self.journal.set_status(run, epoch, RunStatus::Running)?;
        let outcome = match answer {
            Answer::Succeed(output) => CallRecord::Done {
                output,
                compensation: None,
            },
            Answer::Fail(error) => CallRecord::Failed { error, last: true },
        };
        let answer = RecordKind::Finished {
            node: step.to_string(),
            action: Action::Invoke,
            attempt: call.attempts,
            record: outcome,
        };
        let _cancelled = self
            .journal
            .append(run, epoch, &[(history.last_seq + 1, answer)])?;
        self.continue_marked(run, false, executing, Some(epoch))
            .await
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

/// Where a host keeps its state: a SQLite file (the embedded default), or
/// a PostgreSQL database shared by several hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// The SQLite state file.
    File(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl StateLocation {
    /// `postgres://...` (or `postgresql://...`) names a database; anything
    /// else a file.
    pub fn parse(text: &str) -> StateLocation {
        if crate::postgres::is_url(text) {
            StateLocation::Postgres(text.to_string())
        } else {
            StateLocation::File(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLocation::File(path) => write!(f, "{}", path.display()),
            StateLocation::Postgres(url) => f.write_str(&crate::postgres::hide_password(url)),
        }
    }
}

/// The journal and the entity store of one state.
pub type State = (Arc<dyn Journal>, Arc<EntityStore>);

/// Opens the journal and the entities store at `location`: a state file
/// (creating its folder), or a PostgreSQL database (migrating its schema).
pub fn open_state(
    location: &StateLocation,
    durability: crate::journal::SyncMode,
) -> Result<State, String> {
    match location {
        StateLocation::File(path) => open_state_file(path, durability),
        StateLocation::Postgres(url) => {
            let database = crate::postgres::Database::connect(url, durability)?;
            Ok((
                Arc::new(crate::journal::PgJournal::new(database.clone())),
                Arc::new(EntityStore::postgres(database)),
            ))
        }
    }
}

/// Opens the journal and the entities store of a state file, creating its folder.
pub fn open_state_file(path: &Path, durability: crate::journal::SyncMode) -> Result<State, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state folder {}: {e}", dir.display()))?;
    }
    let journal = crate::journal::SqliteJournal::open(path, durability)
        .map_err(|e| format!("cannot open the state file {}: {e}", path.display()))?;
    let entities = EntityStore::open(path)
        .map_err(|e| format!("cannot open the state file {}: {e}", path.display()))?;
    Ok((Arc::new(journal), Arc::new(entities)))
}

/// A step failure given on the command line (`--error '{"kind": ..., "message": ...}'`).
pub fn parse_answer_error(text: &str) -> Result<StepFailure, String> {
    #[derive(serde::Deserialize)]
    struct Given {
        #[serde(default)]
        kind: Option<FailureKind>,
        message: String,
        #[serde(default)]
        compensation_data: Option<Box<serde_json::value::RawValue>>,
    }
    let given: Given = serde_json::from_str(text).map_err(|e| {
        format!("the error is not {{\"kind\"?: \"...\", \"message\": \"...\"}}: {e}")
    })?;
    let mut failure =
        StepFailure::new(given.kind.unwrap_or(FailureKind::Unknown), given.message).permanent();
    // Checked by `Json::parse`, like every JSON that enters.
    failure.compensation_data = given
        .compensation_data
        .map(|raw| Json::parse(raw.get().to_string()))
        .transpose()
        .map_err(|e| format!("the error's compensation_data: {e}"))?;
    Ok(failure)
}
