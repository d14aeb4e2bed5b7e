//! The journal's storage backends, behind the core's [`Journal`] trait
//! (re-exported here with the rest of `wasaga_core::journal`): SQLite
//! ([`SqliteJournal`], in the state file) is the embedded default;
//! PostgreSQL ([`PgJournal`]) is shared by several hosts.

mod postgres;
mod rows;
mod sqlite;

pub use postgres::PgJournal;
pub use sqlite::schema as sqlite_schema;
pub use sqlite::{Gated, LOG_HOLD_AT, SharedCommits, SqliteJournal, SyncMode, lock_gated};
pub use wasaga_core::journal::*;

#[cfg(test)]
mod tests;
