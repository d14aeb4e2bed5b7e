//! Subscribers: after a run, each of its events goes, in order, to every
//! subscriber that wants it: components of the world `subscriber`, or shell
//! commands that read the event as JSON on stdin. A failing subscriber is
//! logged and never changes the run.

use std::process::Stdio;
use std::sync::Arc;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::app::{SubscriberKind, SubscriberSpec};
use crate::saga::Event;
use crate::wasm::{LoadError, Runtime, SubscriberComponent};

/// The subscribers of a workflow, ready to deliver.
#[derive(Default)]
pub struct Subscribers {
    list: Vec<(SubscriberSpec, Option<Arc<SubscriberComponent>>)>,
}

/// What a delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Deliveries that succeeded.
    pub ok: usize,
    /// Deliveries that failed (logged).
    pub failed: usize,
}

impl Subscribers {
    /// Loads the component subscribers (commands need nothing loaded).
    pub fn load(
        specs: &[SubscriberSpec],
        runtime: &Arc<Runtime>,
    ) -> Result<Subscribers, LoadError> {
        let mut list = Vec::with_capacity(specs.len());
        for spec in specs {
            let component = match &spec.kind {
                SubscriberKind::Component { path, limits, .. } => {
                    Some(Arc::new(SubscriberComponent::load(runtime, path, *limits)?))
                }
                SubscriberKind::Command { .. } => None,
            };
            list.push((spec.clone(), component));
        }
        Ok(Subscribers { list })
    }

    /// Whether there is no subscriber.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Delivers `events` of a run, in order, to the subscribers that want them.
    pub async fn deliver(&self, workflow: &str, run_id: &str, events: &[Event]) -> Delivered {
        let mut delivered = Delivered::default();
        for event in events {
            for (spec, component) in &self.list {
                if !spec.wants(&event.name) {
                    continue;
                }
                let result = match (component, &spec.kind) {
                    (Some(component), _) => {
                        component
                            .deliver(&spec.name, event, workflow, run_id, spec.timeout)
                            .await
                    }
                    (None, SubscriberKind::Command { command, workdir }) => {
                        run_command(command, workdir, spec, event, workflow, run_id).await
                    }
                    (None, SubscriberKind::Component { .. }) => Err("not loaded".to_string()),
                };
                match result {
                    Ok(()) => delivered.ok += 1,
                    Err(why) => {
                        delivered.failed += 1;
                        tracing::warn!(subscriber = %spec.name, event = %event.name, declared = %spec.declared_at, "a subscriber failed (the run is not affected): {why}");
                    }
                }
            }
        }
        delivered
    }
}

/// Runs a command subscriber with the event as JSON on stdin.
async fn run_command(
    command: &str,
    workdir: &std::path::Path,
    spec: &SubscriberSpec,
    event: &Event,
    workflow: &str,
    run_id: &str,
) -> Result<(), String> {
    let payload = json!({
        "name": event.name,
        "data": event.data.value(),
        "workflow": workflow,
        "run_id": run_id,
        "step": event.step,
    })
    .to_string();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(workdir)
        .env("WASAGA_EVENT", &event.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{command}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(payload.as_bytes()).await;
    }
    match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("`{command}` exited with {status}")),
        Ok(Err(e)) => Err(format!("`{command}` failed: {e}")),
        Err(_) => Err(format!(
            "`{command}` did not finish within {}",
            humantime::format_duration(spec.timeout)
        )),
    }
}
