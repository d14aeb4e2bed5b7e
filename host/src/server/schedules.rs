//! The schedule loop of `host serve`: every poll, each served workflow with
//! a `schedule` is asked for a due tick, and a run recorded for one is
//! executed like a run started over HTTP. Which tick is due and whether this
//! host records it is `Host::begin_tick`'s business; this may not decide it.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::journal::now_ms;

/// Looks for due ticks every `poll` (with jitter, so hosts do not look in
/// step), as long as the returned task runs.
pub fn start(state: Arc<AppState>, poll: Duration) -> Option<tokio::task::JoinHandle<()>> {
    if !state
        .workflows
        .values()
        .any(|served| served.workflow.manifest.schedule.is_some())
    {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            for (name, served) in &state.workflows {
                if served.workflow.manifest.schedule.is_none() {
                    continue;
                }
                match state
                    .host
                    .begin_tick(&served.workflow, &served.extension_dirs, now_ms())
                {
                    Ok(Some((begun, request))) => {
                        state.metrics.run_started(begun.run_id(), name);
                        super::routes::launch(&state, served.workflow.clone(), begun, request);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(workflow = %name, "could not look at the schedule: {e}")
                    }
                }
            }
            tokio::time::sleep(crate::durable::jittered(poll)).await;
        }
    }))
}
