//! Who may take a sandbox when the engine's instance pool is full. Invokes
//! wait for a slot of their own (a workflow at most half of them), and a
//! share of the pool is kept for compensations, which take none: what ran
//! can always be undone, and no workflow starves another. It knows nothing
//! of wasmtime beyond the pool's size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The share of the pool kept for compensations.
const COMPENSATION_SHARE: u32 = 10;

/// Invoke slots: one pool for all, and one per workflow.
pub struct InvokeSlots {
    all: Arc<Semaphore>,
    per_workflow: u32,
    workflows: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// A held invoke slot (both permits), given back when dropped.
pub struct InvokeSlot {
    _workflow: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl InvokeSlots {
    /// Slots for an engine of `instances` concurrent component instances.
    pub fn new(instances: u32) -> InvokeSlots {
        let reserved = (instances / COMPENSATION_SHARE).max(1);
        let invokes = instances.saturating_sub(reserved).max(1);
        InvokeSlots {
            all: Arc::new(Semaphore::new(invokes as usize)),
            per_workflow: (invokes / 2).max(1),
            workflows: Mutex::default(),
        }
    }

    /// Waits for a slot for an invoke of `workflow` (the call's deadline
    /// bounds the wait, as it bounds the call).
    pub async fn invoke(&self, workflow: &Arc<str>) -> InvokeSlot {
        let own = {
            let mut workflows = self.workflows.lock().unwrap_or_else(|e| e.into_inner());
            workflows
                .entry(workflow.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_workflow as usize)))
                .clone()
        };
        let workflow = own.acquire_owned().await.expect("never closed");
        let all = self
            .all
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        InvokeSlot {
            _workflow: workflow,
            _all: all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_workflow_takes_at_most_half_and_a_tenth_stays_for_compensations() {
        let slots = InvokeSlots::new(100);
        let greedy: Arc<str> = "greedy".into();
        let mut held = Vec::new();
        for _ in 0..45 {
            held.push(slots.invoke(&greedy).await);
        }
        let blocked = tokio::time::timeout(Duration::from_millis(50), slots.invoke(&greedy)).await;
        assert!(blocked.is_err(), "the 46th invoke of one workflow waits");
        let other: Arc<str> = "other".into();
        for _ in 0..45 {
            held.push(slots.invoke(&other).await);
        }
        // 90 of 100 taken: the rest is the compensations'.
        let third: Arc<str> = "third".into();
        let blocked = tokio::time::timeout(Duration::from_millis(50), slots.invoke(&third)).await;
        assert!(
            blocked.is_err(),
            "invokes never take the compensations' share"
        );
        held.pop();
        tokio::time::timeout(Duration::from_secs(5), slots.invoke(&third))
            .await
            .expect("a freed slot is taken");
    }
}
