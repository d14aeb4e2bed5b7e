//! Live run updates: the journal's committed records and status changes,
//! fanned out to every open event stream.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::journal::{Observer, RecordKind};
use crate::saga::RunStatus;

/// One update of one run.
#[derive(Debug, Clone)]
pub enum Update {
    /// Records were committed.
    Records {
        /// The run.
        run: Arc<str>,
        /// The records, with their sequence numbers.
        records: Arc<Vec<(u64, RecordKind)>>,
    },
    /// The run reached a status.
    Status {
        /// The run.
        run: Arc<str>,
        /// Its status.
        status: RunStatus,
    },
}

impl Update {
    /// The run it is about.
    pub fn run(&self) -> &str {
        match self {
            Update::Records { run, .. } | Update::Status { run, .. } => run,
        }
    }
}

/// The fan-out of updates.
pub struct Live {
    sender: broadcast::Sender<Update>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl Live {
    /// Updates from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.sender.subscribe()
    }
}

impl Observer for Live {
    fn committed(&self, run: &str, records: &[(u64, RecordKind)]) {
        // No subscriber is fine.
        let _ = self.sender.send(Update::Records {
            run: run.into(),
            records: Arc::new(records.to_vec()),
        });
    }

    fn status(&self, run: &str, status: RunStatus) {
        let _ = self.sender.send(Update::Status {
            run: run.into(),
            status,
        });
    }
}
