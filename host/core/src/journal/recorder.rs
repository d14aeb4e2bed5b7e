//! The orchestrator's [`Recorder`] over a [`Journal`]: every transition is
//! written before the next action. Also where a test makes the host die at a
//! chosen transition (`WASAGA_CRASH_AT`), and where an outside cancel request
//! is noticed.

use std::sync::{Arc, Mutex};

use super::turn::{Turn, on_multi_thread_runtime};
use super::{Journal, JournalError, Observer, RecordKind};
use crate::saga::{
    Action, CallRecord, CallStart, Event, Fence, OutboundRequest, RecordError, Recorder, Recording,
    RunError, RunReport, RunStatus,
};

/// Records one run's transitions in a journal.
///
/// A call's *finished* record is held back and committed together with what
/// follows it (the next call's *started* record, the run's end): nothing
/// external happens in between, so every transition is still on disk before
/// the next action, with half the commits.
pub struct JournalRecorder {
    journal: Arc<dyn Journal>,
    run: String,
    /// The lease epoch every write is fenced on.
    epoch: u64,
    /// Set for good by the first write that failed (a lost lease, or a
    /// journal that cannot be written): the run stops here.
    lost: std::sync::atomic::AtomicBool,
    /// How this host knows its lease still holds without asking.
    keeper: Option<LeaseKeeper>,
    /// Until when this recorder's own last renewal of the lease holds.
    renewed_until: std::sync::atomic::AtomicI64,
    crash: Option<CrashPoint>,
    pending: Mutex<Pending>,
    /// Whose commit of this run is next (its parallel branches commit one
    /// at a time, in order).
    turn: Turn,
    observer: Option<Arc<dyn Observer>>,
}

struct Pending {
    seq: u64,
    records: Vec<(u64, RecordKind)>,
}

impl JournalRecorder {
    /// A recorder for `run`, executed under lease `epoch`, whose last record
    /// is `last_seq`; dies at `crash` if given.
    pub fn new(
        journal: Arc<dyn Journal>,
        run: &str,
        epoch: u64,
        last_seq: u64,
        crash: Option<CrashPoint>,
    ) -> JournalRecorder {
        JournalRecorder {
            journal,
            run: run.to_string(),
            epoch,
            lost: Default::default(),
            keeper: None,
            renewed_until: Default::default(),
            crash,
            pending: Mutex::new(Pending {
                seq: last_seq,
                records: Vec::new(),
            }),
            turn: Turn::default(),
            observer: None,
        }
    }

    /// Holds the lease as `keeper` says: past the time until which the host
    /// last renewed its leases, the recorder renews this run's lease itself
    /// before it writes, and stops the run if the lease is gone (a host cut
    /// off from the journal stops within a lease, before another host may
    /// take the run).
    pub fn kept(mut self, keeper: LeaseKeeper) -> JournalRecorder {
        self.keeper = Some(keeper);
        self
    }

    /// Also tells `observer` about every committed record.
    pub fn observed(mut self, observer: Option<Arc<dyn Observer>>) -> JournalRecorder {
        self.observer = observer;
        self
    }

    /// Queues a record; commits the queue now if `flush`. Returns its
    /// number, and whether a cancel was requested (known when committed).
    fn add(&self, kind: RecordKind, flush: bool) -> Result<(u64, bool), RecordError> {
        let crash_here = self.crash.as_ref().is_some_and(|c| c.matches(&kind));
        let _turn = (flush || crash_here).then(|| self.turn.take_blocking());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.seq += 1;
        let seq = pending.seq;
        pending.records.push((seq, kind));
        let mut cancel = false;
        if flush || crash_here {
            cancel = self.commit(&mut pending)?;
        }
        if crash_here {
            self.crash.as_ref().expect("checked").die();
        }
        Ok((seq, cancel))
    }

    fn commit(&self, pending: &mut Pending) -> Result<bool, RecordError> {
        if pending.records.is_empty() {
            return Ok(false);
        }
        if self.lost() {
            return Err(self.lease_lost());
        }
        self.check_lease()?;
        let cancel = self
            .journal
            .append(&self.run, self.epoch, &pending.records)
            .map_err(|e| self.failed(e))?;
        if let Some(observer) = &self.observer {
            observer.committed(&self.run, &pending.records);
        }
        pending.records.clear();
        Ok(cancel)
    }

    /// Queues `kind` and commits it with what is held back, waiting for
    /// the commit as a task; returns whether a cancel was requested.
    async fn add_and_commit(&self, kind: RecordKind) -> Result<bool, RecordError> {
        let _turn = self.turn.take().await;
        let (appending, records) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.seq += 1;
            let seq = pending.seq;
            pending.records.push((seq, kind));
            if self.lost() {
                return Err(self.lease_lost());
            }
            self.check_lease()?;
            let records = std::mem::take(&mut pending.records);
            // Queued while the records are taken: a branch's later write
            // (its own, or one held back) is queued after this one.
            let appending = self.journal.append_queued(&self.run, self.epoch, &records);
            (appending, records)
        };
        self.settle(appending, &records)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Awaits the commit of `records`, taken out of the recorder, and tells
    /// the observer once it is made; returns whether a cancel was requested.
    async fn settle(
        &self,
        commit: super::Appending<'_>,
        records: &[(u64, RecordKind)],
    ) -> Result<bool, JournalError> {
        let unsettled = Unsettled(&self.lost);
        let committed = commit.await;
        std::mem::forget(unsettled);
        let cancel = committed?;
        if let Some(observer) = &self.observer {
            observer.committed(&self.run, records);
        }
        Ok(cancel)
    }

    fn started_record(call: &CallStart<'_>) -> RecordKind {
        RecordKind::Started {
            node: call.node.to_string(),
            step: call.step.to_string(),
            action: call.action,
            attempt: call.attempt,
            input: call.input.cloned(),
        }
    }
}

impl JournalRecorder {
    /// Records the run's end with the records still held back, in one
    /// transaction where the journal can (for a run started with
    /// `Durability::end_writes_last_records`).
    pub fn finish_run(&self, report: &RunReport) -> Result<(), JournalError> {
        let _turn = self.turn.take_blocking();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.may_end()?;
        let finished = self
            .journal
            .finish_with(&self.run, self.epoch, &pending.records, report);
        if let Err(e) = finished {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
        if let Some(observer) = &self.observer {
            observer.committed(&self.run, &pending.records);
        }
        pending.records.clear();
        Ok(())
    }

    /// [`JournalRecorder::finish_run`], waiting for the commit as a task
    /// on tokio's multi-thread runtime (see `call_started_async`).
    pub async fn finish_run_queued(&self, report: &RunReport) -> Result<(), JournalError> {
        if !on_multi_thread_runtime() {
            return self.finish_run(report);
        }
        let _turn = self.turn.take().await;
        let (finishing, records) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            self.may_end()?;
            let records = std::mem::take(&mut pending.records);
            let finishing = self
                .journal
                .finish_queued(&self.run, self.epoch, &records, report);
            (finishing, records)
        };
        if let Err(e) = self.settle(finishing, &records).await {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    /// Whether this host may still record the run's end: it did not lose
    /// the run, and its lease holds (renewed if due).
    fn may_end(&self) -> Result<(), JournalError> {
        if self.lost() {
            return Err(JournalError::LeaseLost(self.run.clone()));
        }
        self.check_lease().map_err(|e| match e {
            RecordError::LeaseLost(_) => JournalError::LeaseLost(self.run.clone()),
            other => JournalError::Storage(other.to_string()),
        })
    }
}

impl Recorder for JournalRecorder {
    fn call_started(&self, call: &CallStart<'_>) -> Result<(), RecordError> {
        let (_, cancel) = self.add(Self::started_record(call), true)?;
        // A cancel request stops new invokes (compensations still run); the
        // start just recorded is then never followed by a call.
        if cancel && call.action == Action::Invoke {
            return Err(RecordError::Cancelled);
        }
        Ok(())
    }

    /// On tokio's multi-thread runtime, a start whose commit waits for
    /// other runs' (group commit) waits as a task: its worker goes on with
    /// other runs, which then join the next commit. With a crash point set
    /// (tests), the synchronous path, which dies where it is told.
    fn call_started_async(&self, call: &CallStart<'_>) -> Recording<'_> {
        if self.crash.is_some() || !on_multi_thread_runtime() {
            return Recording::ready(self.call_started(call));
        }
        let started = Self::started_record(call);
        let invoke = call.action == Action::Invoke;
        Recording::waiting(async move {
            let cancel = self.add_and_commit(started).await?;
            // As `call_started`: a cancel request stops new invokes.
            if cancel && invoke {
                return Err(RecordError::Cancelled);
            }
            Ok(())
        })
    }

    fn call_finished(
        &self,
        node: &str,
        action: Action,
        attempt: u32,
        record: &CallRecord,
    ) -> Result<u64, RecordError> {
        let finished = RecordKind::Finished {
            node: node.to_string(),
            action,
            attempt,
            record: record.clone(),
        };
        // An async step pauses the run right after: commit now.
        let pausing = matches!(record, CallRecord::Waiting { .. });
        self.add(finished, pausing).map(|(seq, _)| seq)
    }

    fn call_requests(
        &self,
        node: &str,
        action: Action,
        attempt: u32,
        requests: &[OutboundRequest],
    ) -> Result<(), RecordError> {
        let kind = RecordKind::Requests {
            node: node.to_string(),
            action,
            attempt,
            requests: requests.to_vec(),
        };
        self.add(kind, false).map(|_| ())
    }

    fn event(&self, event: &Event) -> Result<(), RecordError> {
        // Lifecycle events follow from the records; only emitted ones are kept.
        if event.lifecycle {
            return Ok(());
        }
        self.add(RecordKind::Event(event.clone()), false)
            .map(|_| ())
    }

    fn compensating(&self, error: &RunError) -> Result<(), RecordError> {
        self.add(RecordKind::Compensating(error.clone()), true)?;
        self.check_lease()?;
        self.journal
            .set_status(&self.run, self.epoch, RunStatus::Compensating)
            .map_err(|e| self.failed(e))?;
        if let Some(observer) = &self.observer {
            observer.status(&self.run, RunStatus::Compensating);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), RecordError> {
        let _turn = self.turn.take_blocking();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.commit(&mut pending).map(|_| ())
    }

    fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn fence(&self) -> Option<Fence> {
        Some(Fence {
            run: self.run.as_str().into(),
            epoch: self.epoch,
        })
    }
}

impl JournalRecorder {
    /// A journal failure as the orchestrator sees it. Either way the run
    /// stops here, remembered so nothing more is even tried: its lease was
    /// taken over, or a transition could not be recorded (then this host
    /// cannot know it still holds the run; whoever claims it next continues
    /// it from what was recorded).
    fn failed(&self, err: JournalError) -> RecordError {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(run = %self.run, "the run stops here: {err}");
        match err {
            JournalError::LeaseLost(_) => self.lease_lost(),
            other => RecordError::Failed(other.to_string()),
        }
    }

    /// Past the host's last renewal: renews this run's lease now, or stops.
    fn check_lease(&self) -> Result<(), RecordError> {
        let Some(keeper) = &self.keeper else {
            return Ok(());
        };
        use std::sync::atomic::Ordering::SeqCst;
        let now = super::now_ms();
        let valid = keeper
            .valid_until
            .load(SeqCst)
            .max(self.renewed_until.load(SeqCst));
        if now < valid {
            return Ok(());
        }
        let renewed = self
            .journal
            .renew(&keeper.owner, keeper.lease, std::slice::from_ref(&self.run))
            .map_err(|e| self.failed(e))?;
        if renewed.contains(&self.run) {
            self.renewed_until
                .store(now + keeper.lease.as_millis() as i64 * 4 / 5, SeqCst);
            return Ok(());
        }
        Err(self.failed(JournalError::LeaseLost(self.run.clone())))
    }

    fn lease_lost(&self) -> RecordError {
        RecordError::LeaseLost(JournalError::LeaseLost(self.run.clone()).to_string())
    }
}

/// Marks a run lost when dropped: held while a commit whose records were
/// taken out of the recorder is awaited, and forgotten once it answers. If
/// the wait never ends (its task panicked, say in a commit it made for
/// other runs too, or was dropped), the records may or may not have been
/// written, and they are no longer held back to be written again: this host
/// writes nothing more to the run, as if it had died there, and whoever
/// claims the run next continues it from what was recorded.
struct Unsettled<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a host knows of its leases: whose they are, how long they last,
/// and until when (unix ms, by this host's clock, with a margin) the last
/// renewal of all of them holds.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    /// The host.
    pub owner: super::Owner,
    /// How long a lease lasts.
    pub lease: std::time::Duration,
    /// Until when the host's last renewal holds.
    pub valid_until: Arc<std::sync::atomic::AtomicI64>,
}

/// A transition at which the host kills itself, for crash tests:
/// `WASAGA_CRASH_AT=<started|finished|event|compensating>[:<node>[:<invoke|compensate>[:<attempt>]]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashPoint {
    kind: String,
    node: Option<String>,
    action: Option<Action>,
    attempt: Option<u32>,
}

impl CrashPoint {
    /// The crash point `WASAGA_CRASH_AT` names, if any.
    pub fn from_env() -> Option<CrashPoint> {
        std::env::var("WASAGA_CRASH_AT")
            .ok()
            .and_then(|spec| CrashPoint::parse(&spec))
    }

    /// Parses a crash point.
    pub fn parse(spec: &str) -> Option<CrashPoint> {
        let mut parts = spec.splitn(4, ':');
        let kind = parts.next()?.to_string();
        Some(CrashPoint {
            kind,
            node: parts.next().map(str::to_string),
            action: parts.next().and_then(Action::from_name),
            attempt: parts.next().and_then(|a| a.parse().ok()),
        })
    }

    fn matches(&self, kind: &RecordKind) -> bool {
        let (name, node, action, attempt) = match kind {
            RecordKind::Started {
                node,
                action,
                attempt,
                ..
            } => ("started", Some(node), Some(*action), Some(*attempt)),
            RecordKind::Finished {
                node,
                action,
                attempt,
                ..
            } => ("finished", Some(node), Some(*action), Some(*attempt)),
            RecordKind::Requests {
                node,
                action,
                attempt,
                ..
            } => ("requests", Some(node), Some(*action), Some(*attempt)),
            RecordKind::Event(_) => ("event", None, None, None),
            RecordKind::Compensating(_) => ("compensating", None, None, None),
            RecordKind::Retry { .. } => ("retry", None, None, None),
        };
        self.kind == name
            && self.node.as_ref().is_none_or(|n| Some(n) == node)
            && self.action.is_none_or(|a| Some(a) == action)
            && self.attempt.is_none_or(|a| Some(a) == attempt)
    }

    /// Dies like a killed process: no cleanup, no flush.
    fn die(&self) -> ! {
        eprintln!("WASAGA_CRASH_AT: the host dies here ({})", self.kind);
        // SAFETY: raising SIGKILL on ourselves has no memory-safety concerns.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Json;

    #[test]
    fn crash_points_match_their_transition() {
        let point = CrashPoint::parse("finished:create-brand:invoke").unwrap();
        let done = CallRecord::Done {
            output: Json::null(),
            compensation: None,
        };
        let finished = |node: &str, action| RecordKind::Finished {
            node: node.into(),
            action,
            attempt: 1,
            record: done.clone(),
        };
        assert!(point.matches(&finished("create-brand", Action::Invoke)));
        assert!(!point.matches(&finished("create-brand", Action::Compensate)));
        assert!(!point.matches(&finished("other", Action::Invoke)));
        assert!(
            CrashPoint::parse("compensating")
                .unwrap()
                .matches(&RecordKind::Compensating(RunError {
                    step: None,
                    kind: crate::saga::FailureKind::Unknown,
                    message: String::new(),
                    permanent: false,
                    compensation_failures: vec![],
                }))
        );
    }
}
