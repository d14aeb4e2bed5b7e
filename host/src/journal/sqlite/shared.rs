//! Another store's writes to the state file (the entity store's
//! single-statement writes), committed in the journal's group commits: a
//! statement waits in the same queue as runs' starts, appends and ends, and
//! shares their transaction (its log frames, its `fsync` with `full`, one
//! turn on the connection). It owns the handle; the SQL is the other
//! store's, the commit `append.rs`'s.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::append::{Answer, Write, commit_batch, commit_writes};
use super::{JournalError, SqliteJournal, group};

/// A handle on a state file's connection and its group-commit queue, for
/// a store that shares the file with the journal.
#[derive(Clone)]
pub struct SharedCommits {
    conn: Arc<Mutex<Connection>>,
    writes: Arc<group::Group<Write, Answer>>,
    flushes: bool,
}

impl SharedCommits {
    /// The state file's connection (for reads, and for writes that read
    /// before they write: those take it on their own).
    pub fn connection(&self) -> Arc<Mutex<Connection>> {
        self.conn.clone()
    }

    /// Runs `sql` with `params` in the next group commit, waiting for it
    /// as a task (a guest's call: its worker goes on with other runs, which
    /// may join the same commit). Answers how many rows it changed once
    /// that is committed; an error of the statement rolls back only the
    /// statement. Dropped before it is answered (its call's deadline, a
    /// cancel), the statement leaves the queue; if its commit is already
    /// under way, it is committed before anything queued after it (the
    /// call's failure record among them), as a write the guest made just
    /// before failing would be.
    pub async fn execute(
        &self,
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
    ) -> Result<usize, JournalError> {
        let write = Write::Statement { sql, params };
        if !group::enabled() {
            return self.execute_alone(write);
        }
        self.writes
            .enqueue(write)
            .settled(|batch| commit_batch(&self.conn, self.flushes, batch))
            .await?
            .changed()
    }

    /// Commits `write` on its own (the benchmarks' baseline).
    fn execute_alone(&self, write: Write) -> Result<usize, JournalError> {
        let alone = Arc::new(group::Pending::new(write));
        commit_writes(&self.conn, std::slice::from_ref(&alone));
        alone.outcome()?.changed()
    }
}

impl SqliteJournal {
    /// The handle for the entity store of the same state file (see
    /// [`SqliteJournal::connection`] for why one connection serves both).
    pub fn shared_commits(&self) -> SharedCommits {
        SharedCommits {
            conn: self.conn.clone(),
            writes: self.writes.clone(),
            flushes: self.flushes,
        }
    }
}
