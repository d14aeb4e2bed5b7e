//! How a host holds its leases: the thread that renews the leases of the
//! runs it executes, and the sweep that takes over the runs no live host
//! holds. It may not execute a run itself (the sweep hands each one to
//! `Host`'s resume).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use super::{DurableError, Executions, Host};
use crate::journal::{Journal, Owner, now_ms};
use crate::saga::RunReport;

/// How long a lease lasts without renewal (renewed every third of it): how
/// long, at most, the runs of a host that vanished wait before another host
/// takes them over (on one machine, a dead process's runs are taken at once).
pub const LEASE: Duration = Duration::from_secs(10);

/// How many orphaned runs one sweep claims at most.
const SWEEP_BATCH: usize = 32;

/// Until when a lease renewed at `at` is counted on: it holds until `at +
/// lease` by the journal's clock; this host counts on four fifths of that.
pub(super) fn counted_until(at: i64, lease: Duration) -> i64 {
    at + (lease.as_millis() as i64) * 4 / 5
}

/// Between half and all of `poll`, by the clock's low bits: so hosts that
/// look every `poll` do not look in step.
pub fn jittered(poll: Duration) -> Duration {
    let jitter = (crate::journal::now_us() as u64 % 1000) as f64 / 2000.0;
    poll.mul_f64(0.5 + jitter)
}

/// The thread renewing a host's leases, told to stop when the host goes.
pub(super) struct Renewal {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Renewal {
    /// Renews the leases of the runs executing here (only those: a run this
    /// process holds but no longer executes expires, and a sweep takes it)
    /// every third of `lease`, and moves `valid_until` on after each
    /// success. On a thread of its own: the async workers may all be busy in
    /// blocking journal calls, and a late renewal loses leases.
    pub(super) fn start(
        journal: Arc<dyn Journal>,
        owner: Owner,
        executing: Executions,
        valid_until: Arc<AtomicI64>,
        lease: Duration,
    ) -> Renewal {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasaga-leases".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(lease / 3);
                    if stopped.load(Ordering::SeqCst) {
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
                        Ok(_) => valid_until.store(counted_until(at, lease), Ordering::SeqCst),
                        // Past `valid_until` each run's recorder renews
                        // its own lease before it writes, or stops the run.
                        Err(e) => tracing::warn!("could not renew leases: {e}"),
                    }
                }
            })
            .expect("a thread for lease renewals");
        Renewal { stop, thread }
    }

    /// Stops the thread (at once, not at its next turn).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
    }
}

impl Host {
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
                        host.takeovers
                            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                        for (run, epoch) in claimed {
                            let host = host.clone();
                            tokio::spawn(async move {
                                tracing::info!(
                                    run,
                                    "taking over an unfinished run no live host holds"
                                );
                                if let Err(e) = host.resume_claimed(&run, epoch).await {
                                    host.note_failed_resume(&run, &e);
                                }
                            });
                        }
                    }
                    Err(e) => tracing::warn!("could not look for unfinished runs: {e}"),
                }
                // Waiting runs whose time came (timers are journaled).
                host.wake_due(&skip);
                tokio::time::sleep(jittered(poll)).await;
            }
        })
    }

    /// Says why a run could not be resumed; what a retry cannot mend (a
    /// manifest or component problem) is left to an operator and not tried
    /// again by this process. Anything else (the database away for a
    /// moment, say) is tried again: claimed once the lease taken here
    /// expires, or woken at the next poll.
    pub(super) fn note_failed_resume(&self, run: &str, e: &DurableError) {
        tracing::warn!(run, "could not resume the run: {e}");
        if matches!(
            e,
            DurableError::Manifest { .. }
                | DurableError::Load(_)
                | DurableError::ChangedComponents(_)
        ) {
            self.refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(run.to_string());
        }
    }

    /// Resumes a run this host's sweep claimed (under `epoch`).
    pub(super) async fn resume_claimed(
        &self,
        run: &str,
        epoch: u64,
    ) -> Result<RunReport, DurableError> {
        let executing = self.executing_or_refuse(run)?;
        self.continue_marked(run, false, executing, Some(epoch))
            .await
    }
}
