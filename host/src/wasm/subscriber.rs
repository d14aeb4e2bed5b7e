//! A subscriber component (world `subscriber`): one fresh sandbox per event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sandbox::{Limits, new_store};
use super::{LoadError, Runtime};
use crate::app::{ConfigValues, Grants};
use crate::capabilities::bindings::subscriber::wasaga::step::subscription::RunEvent;
use crate::capabilities::bindings::subscriber::{Subscriber, SubscriberPre};
use crate::capabilities::{CallCapabilities, EntityStore, Services};
use crate::saga::{Event, RunEvents};

/// A loaded subscriber component.
pub struct SubscriberComponent {
    runtime: Arc<Runtime>,
    pre: SubscriberPre<super::HostState>,
    limits: Limits,
    services: Services,
}

impl SubscriberComponent {
    /// Loads the component at `path` against the `subscriber` world.
    pub fn load(
        runtime: &Arc<Runtime>,
        path: &std::path::Path,
        limits: Limits,
    ) -> Result<SubscriberComponent, LoadError> {
        let component = runtime.compile(path)?;
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .and_then(SubscriberPre::new)
            .map_err(|e| LoadError::Contract {
                path: path.to_path_buf(),
                message: format!("{e:#} (a subscriber implements the world `subscriber`)"),
            })?;
        Ok(SubscriberComponent {
            runtime: runtime.clone(),
            pre,
            limits,
            // A subscriber reaches no capability but `log`.
            services: Services {
                entities: Arc::new(EntityStore::in_memory().expect("an in-memory store opens")),
                config: Arc::new(ConfigValues::default()),
                secrets: Arc::default(),
                http: runtime.http().clone(),
            },
        })
    }

    /// Delivers one event; `Err` says why the subscriber failed.
    pub async fn deliver(
        &self,
        name: &str,
        event: &Event,
        workflow: &str,
        run_id: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let call = CallCapabilities {
            services: self.services.clone(),
            grants: Arc::new(Grants::default()),
            node: name.into(),
            run_id: run_id.into(),
            events: Arc::new(RunEvents::default()),
            origin: None,
            created: Default::default(),
            emitted: Default::default(),
            entity_writes: Default::default(),
            entity_bytes: Default::default(),
            logged: Default::default(),
            outbound: Arc::new(crate::capabilities::OutboundCall::new(
                format!("{workflow}:{run_id}:{name}:event").into(),
                None,
                Arc::default(),
            )),
            fence: None,
        };
        // A delivery takes a slot as an invoke does (as one more workflow),
        // so runs ending in bulk cannot use up the compensations' share.
        let subscribers: Arc<str> = Arc::from("(subscribers)");
        let _slot = self.runtime.invoke_slot(&subscribers).await;
        let mut store = new_store(
            self.runtime.engine(),
            call,
            self.limits,
            Some(Instant::now() + timeout),
        );
        let instance: Subscriber = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let wit_event = RunEvent {
            name: event.name.clone(),
            data: event.data.text().to_string(),
            workflow: workflow.to_string(),
            run_id: run_id.to_string(),
            step: event.step.clone(),
        };
        let result = instance.call_on_event(&mut store, &wit_event).await;
        let (stderr, _) = store.data().stderr.text();
        for line in stderr
            .lines()
            .chain(store.data().stdout.text().0.lines())
            .filter(|l| !l.trim().is_empty())
        {
            tracing::info!(target: "step", subscriber = name, "{line}");
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(message),
            Err(trap)
                if trap
                    .downcast_ref::<super::sandbox::DeadlineExceeded>()
                    .is_some() =>
            {
                Err(format!(
                    "interrupted after its timeout of {}",
                    humantime::format_duration(timeout)
                ))
            }
            Err(trap) => Err(format!("trapped: {trap}")),
        }
    }
}
