//! Schedules: whether a workflow's schedule has a tick due, and the run
//! recorded for it — once per tick across every host on one journal (the
//! journal's schedule row is moved on by compare-and-set and keeps the last
//! tick handled, so missed ticks give one catch-up run, not a flood; the
//! tick's time is in the run's transaction id). It may not execute the run
//! (the caller completes it).

use super::{Begun, DurableError, Host, Origin};
use crate::app::schedule::Overlap;
use crate::json::Json;
use crate::saga::RunRequest;
use crate::workflow::LoadedWorkflow;

/// The transaction id of `workflow`'s run for the tick at `tick` (unix ms).
pub fn tick_transaction(tick: i64) -> String {
    format!("schedule:{}", crate::saga::rfc3339(tick))
}

impl Host {
    /// Records the run of `workflow`'s schedule due at `now` (unix ms), if
    /// there is one and no host recorded it yet; `None` when no tick is due,
    /// another host took it, or the overlap policy holds it back (`skip`
    /// drops the tick, `queue` leaves it for a later look).
    ///
    /// A host first moves the journal's schedule row on to the tick, by
    /// compare-and-set (of hosts looking at once, one does, so the overlap
    /// check and the start are one decision), with the tick pending; then
    /// records its run and clears the pending tick. A host that dies in
    /// between leaves the tick pending, and the next look records its run
    /// (the tick's transaction id makes it one run, whoever records it).
    pub fn begin_tick(
        &self,
        workflow: &LoadedWorkflow,
        extension_dirs: &[std::path::PathBuf],
        now: i64,
    ) -> Result<Option<(Begun, RunRequest)>, DurableError> {
        let Some(schedule) = &workflow.manifest.schedule else {
            return Ok(None);
        };
        let name = &workflow.manifest.workflow.name;
        // A schedule seen for the first time (or changed) starts from now:
        // ticks before it existed are not "missed".
        let state = self
            .journal
            .schedule_state(name, &schedule.identity(), now)?;
        if let Some(pending) = state.pending_tick {
            return self.record_tick(workflow, extension_dirs, pending);
        }
        let last = state.last_tick;
        let Some(latest) = schedule.latest_at(now).filter(|tick| *tick > last) else {
            return Ok(None);
        };
        let mut tick = latest;
        match schedule.overlap {
            Overlap::Allow => {}
            // Dropped: a run of an earlier tick was unfinished at this tick.
            Overlap::Skip if self.journal.schedule_busy(name, latest)? => {
                if self.journal.decide_schedule(name, last, latest, None)? {
                    tracing::info!(workflow = %name, tick = %crate::saga::rfc3339(latest), "tick skipped: the run of an earlier tick was unfinished (overlap = \"skip\")");
                }
                return Ok(None);
            }
            Overlap::Skip => {}
            // Held until the unfinished run ends.
            Overlap::Queue if self.journal.schedule_busy(name, now)? => return Ok(None),
            Overlap::Queue => {
                // The first tick that waited for that run starts now (the
                // later ones collapse into it); with none waiting, the
                // latest (a catch-up after downtime).
                if let Some(first) = schedule.next_after(last).filter(|t| *t < latest)
                    && self.journal.schedule_busy(name, first)?
                {
                    tick = first;
                }
            }
        }
        if !self
            .journal
            .decide_schedule(name, last, latest, Some(tick))?
        {
            // Another host decided first.
            return Ok(None);
        }
        let missed = schedule.ticks_between(last, latest);
        if missed > 0 {
            tracing::info!(workflow = %name, tick = %crate::saga::rfc3339(tick), missed, "ticks were missed (no host ran the schedule, or they collapsed into a held one): one run");
        }
        self.record_tick(workflow, extension_dirs, tick)
    }

    /// Records the run of the pending `tick` (or finds it recorded), then
    /// clears the pending tick.
    fn record_tick(
        &self,
        workflow: &LoadedWorkflow,
        extension_dirs: &[std::path::PathBuf],
        tick: i64,
    ) -> Result<Option<(Begun, RunRequest)>, DurableError> {
        let Some(schedule) = &workflow.manifest.schedule else {
            return Ok(None);
        };
        let name = &workflow.manifest.workflow.name;
        let at = crate::saga::rfc3339(tick);
        let mut request = RunRequest::new(schedule.input.clone());
        request.transaction_id = tick_transaction(tick);
        request.metadata = Json::from_value(serde_json::json!({ "schedule_tick": at }));
        let begun = match self.begin_with(
            workflow,
            extension_dirs,
            &request,
            Origin {
                tick: Some(tick),
                ..Origin::default()
            },
        ) {
            Ok(begun) => begun,
            // What no retry mends (a concurrency key the input cannot
            // give): the tick is dropped, not pending forever.
            Err(DurableError::Refused(reason)) => {
                tracing::error!(workflow = %name, tick = %at, "the tick's run was refused, so the tick is dropped: {reason}");
                self.journal.settle_schedule(name, tick)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // A failure here leaves the tick pending: the next look finds the
        // run recorded and clears it. The run is executed either way.
        if let Err(e) = self.journal.settle_schedule(name, tick) {
            tracing::warn!(workflow = %name, tick = %at, "could not clear the pending tick: {e}");
        }
        Ok(match begun {
            Begun::Fresh(..) => {
                tracing::info!(workflow = %name, tick = %at, run = %request.run_id, "scheduled run started");
                Some((begun, request))
            }
            // Started by the queue when its key has room.
            Begun::Queued(_) => None,
            Begun::Existing(_) => None,
        })
    }
}
