//! One run's commits one at a time, whether the committer waits as a task
//! (a step's start: it yields to other runs meanwhile) or on its thread
//! (the rarer writes that stay synchronous). Not first come, first served:
//! the holder takes the records held back when it gets the turn, so
//! whoever holds it writes the run's next records, in sequence order. It
//! owns that turn only; what a commit writes is the recorder's.
//!
//! Why a turn of its own: a run's parallel branches are tasks of their own,
//! and a commit that waits as a task must not hold a lock a thread blocks
//! on (the branch holding it could not be polled by a blocked worker).

use std::sync::{Condvar, Mutex, MutexGuard};

/// Who commits next for one run.
#[derive(Default)]
pub(super) struct Turn {
    taken: Mutex<bool>,
    /// Wakes a thread that waits.
    freed: Condvar,
    /// Wakes a task that waits.
    freed_for_tasks: tokio::sync::Notify,
}

/// Holds the turn until dropped.
pub(super) struct HeldTurn<'a>(&'a Turn);

impl Turn {
    /// Takes the turn, waiting as a task while another commit holds it.
    pub(super) async fn take(&self) -> HeldTurn<'_> {
        loop {
            let freed = self.freed_for_tasks.notified();
            if let Some(held) = self.try_take() {
                return held;
            }
            freed.await;
        }
    }

    /// Takes the turn, waiting on this thread (handed off the runtime's
    /// worker, so that the task holding the turn can still be polled).
    pub(super) fn take_blocking(&self) -> HeldTurn<'_> {
        if let Some(held) = self.try_take() {
            return held;
        }
        let wait = || {
            let mut taken = self.lock();
            while *taken {
                taken = self
                    .freed
                    .wait(taken)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            *taken = true;
        };
        if on_multi_thread_runtime() {
            tokio::task::block_in_place(wait);
        } else {
            wait();
        }
        HeldTurn(self)
    }

    fn try_take(&self) -> Option<HeldTurn<'_>> {
        let mut taken = self.lock();
        if *taken {
            return None;
        }
        *taken = true;
        Some(HeldTurn(self))
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for HeldTurn<'_> {
    fn drop(&mut self) {
        *self.0.lock() = false;
        self.0.freed.notify_one();
        // A task that was about to wait finds the permit and looks again.
        self.0.freed_for_tasks.notify_one();
    }
}

/// Whether this thread is a worker of tokio's multi-thread runtime, where a
/// waiting task leaves its thread to the others (and `block_in_place`
/// works).
pub(super) fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_and_threads_take_the_turn_one_at_a_time() {
        let turn = Arc::new(Turn::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..16 {
            let (turn, inside) = (turn.clone(), inside.clone());
            handles.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let _held = if i % 2 == 0 {
                        turn.take().await
                    } else {
                        turn.take_blocking()
                    };
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    }
}
