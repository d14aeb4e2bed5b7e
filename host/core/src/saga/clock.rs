//! The wall clock a run reads for its durable times (a sleep's end, an
//! async step's answer deadline): the system's, or one a test moves by hand
//! so that hours pass in no time. It may not sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Unix ms, from the system or from a hand-moved test clock.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands at `start_ms` until [`Clock::advance`] moves it
    /// (its clones move with it).
    pub fn manual(start_ms: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    /// Now, in unix ms.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(at) => at.load(Ordering::SeqCst),
            None => crate::journal::now_ms(),
        }
    }

    /// Moves a manual clock on (a system clock is left alone).
    pub fn advance(&self, by: Duration) {
        if let Some(at) = &self.0 {
            at.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}
