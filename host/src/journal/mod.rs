//! The journal's storage backends, behind the core's [`Journal`] trait
//! (re-exported here with the rest of `wasaga_core::journal`): SQLite
//! ([`SqliteJournal`], in the state file) is the embedded default.

mod sqlite;

pub use sqlite::{SqliteJournal, SyncMode};
pub use wasaga_core::journal::*;
