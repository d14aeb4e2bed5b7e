//! Schedules: whether a workflow's schedule has a tick due, and the run
//! recorded for it — once per tick across every host on one journal (the
//! tick's time is in the run's transaction id, and the journal's schedule
//! row keeps the last tick handled, so missed ticks give one catch-up run,
//! not a flood). It may not execute the run (the caller completes it).

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
        // A schedule seen for the first time starts from now: ticks before
        // it existed are not "missed".
        let last = self.journal.schedule_last_tick(name, now)?;
        let Some(latest) = schedule.latest_at(now).filter(|tick| *tick > last) else {
            return Ok(None);
        };
        let mut tick = latest;
        match schedule.overlap {
            Overlap::Allow => {}
            // Dropped: a run of an earlier tick was unfinished at this tick.
            Overlap::Skip if self.journal.schedule_busy(name, latest)? => {
                if self.journal.advance_schedule(name, latest)? {
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
        let at = crate::saga::rfc3339(tick);
        let missed = schedule.ticks_between(last, tick);
        if missed > 0 {
            tracing::info!(workflow = %name, tick = %at, missed, "ticks were missed while no host ran the schedule: one run for the latest");
        }
        let mut request = RunRequest::new(schedule.input.clone());
        request.transaction_id = tick_transaction(tick);
        request.metadata = Json::from_value(serde_json::json!({ "schedule_tick": at }));
        let begun = self.begin_with(
            workflow,
            extension_dirs,
            &request,
            Origin {
                tick: Some(tick),
                ..Origin::default()
            },
        )?;
        // After the run is recorded: a host that dies between the two
        // leaves the tick due, and the next look finds its run. Past every
        // tick up to `latest`: those a held tick stood for are handled.
        self.journal.advance_schedule(name, latest)?;
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
