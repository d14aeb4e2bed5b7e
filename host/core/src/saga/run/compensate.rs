//! The backward pass: the compensation stack, undone in reverse order of
//! completion; a compensation that still fails is reported and the others
//! still run.

use super::*;

impl Run {
    /// Compensates the stack in reverse order of completion. A compensation
    /// that still fails after its retries is reported; the others still run.
    pub(super) async fn compensate_all(&self) -> Vec<CompensationFailure> {
        let mut stack = std::mem::take(&mut *self.completed.lock().expect("stack lock"));
        stack.sort_by_key(|entry| std::cmp::Reverse(entry.seq));
        let mut failures = Vec::new();
        for entry in stack {
            if let Err(error) = self.compensate_one(&entry).await {
                failures.push(CompensationFailure {
                    step: entry.node.to_string(),
                    error,
                });
            }
        }
        failures
    }

    pub(super) async fn compensate_one(&self, entry: &Completed) -> Result<(), StepFailure> {
        let mut attempt = 1;
        if let Some(recorded) = self.history.call(&entry.node, Action::Compensate) {
            match &recorded.settled {
                Some((_, CallRecord::Failed { error, .. })) => return Err(error.clone()),
                Some(_) => return Ok(()),
                None => attempt = recorded.attempts + 1,
            }
        }
        let target = CallTarget {
            step: entry.step,
            node: &entry.node,
            action: Action::Compensate,
            policy: &entry.policy,
            input: entry.data.as_ref(),
        };
        match self.attempts(&target, attempt).await {
            Ok((_, CallRecord::Compensated)) => Ok(()),
            Ok((_, CallRecord::Failed { error, .. })) => Err(error),
            Ok((_, other)) => Err(StepFailure::new(
                FailureKind::Host,
                format!("a compensation ended with an unexpected record: {other:?}"),
            )
            .permanent()),
            Err(stop) => Err(StepFailure::new(
                FailureKind::Host,
                format!("the compensation stopped: {}", stop.describe()),
            )
            .permanent()),
        }
    }
}
