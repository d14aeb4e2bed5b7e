//! The state file's schema and its versioned migrations (the journal's
//! tables and the entities table): applied at open, in one write
//! transaction, and recorded in `PRAGMA user_version`. It may not read or
//! write runs.

use rusqlite::{Connection, TransactionBehavior};

/// The newest schema this host knows. A state file at a higher version was
/// written by a newer Wasaga and is refused.
pub const VERSION: i64 = 6;

/// Version 1: the tables as the first releases made them (with `CREATE ...
/// IF NOT EXISTS`, so a file made before versioning, at user_version 0,
/// passes through), and the columns added in place since.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    manifest TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    extension_dirs TEXT NOT NULL,
    input TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    partial INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error TEXT,
    errors TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    components TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_transaction ON runs (workflow, transaction_id, created_at);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, id);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    action TEXT,
    attempt INTEGER,
    body TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS records_by_run ON records (run, seq);
CREATE TABLE IF NOT EXISTS manifests (
    hash TEXT PRIMARY KEY,
    files TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entities (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    created_by TEXT,
    PRIMARY KEY (collection, id)
);
";

/// The tables of version 1 as a test can make them (an old state file).
#[cfg(test)]
pub const VERSION_1_TABLES: &str = TABLES;

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

fn version_1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TABLES)?;
    // Added in place before versioning: a file from then lacks them.
    if !has_column(conn, "runs", "components")? {
        conn.execute_batch("ALTER TABLE runs ADD COLUMN components TEXT")?;
    }
    if !has_column(conn, "entities", "created_by")? {
        conn.execute_batch("ALTER TABLE entities ADD COLUMN created_by TEXT")?;
    }
    Ok(())
}

/// Version 2: the lease epoch every write of the executing host is fenced on.
fn version_2(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0")
}

/// Version 3: when a waiting run wakes (a sleep's end, an async step's
/// deadline), indexed for the timer sweep; the run a rerun runs again; how
/// many times a run was taken over from a host that died executing it.
fn version_3(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "ALTER TABLE runs ADD COLUMN wake_at INTEGER;
         CREATE INDEX runs_by_wake ON runs (wake_at) WHERE wake_at IS NOT NULL;
         ALTER TABLE runs ADD COLUMN rerun_of TEXT;
         CREATE INDEX runs_by_rerun ON runs (rerun_of) WHERE rerun_of IS NOT NULL;
         ALTER TABLE runs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;",
    )
}

/// Version 4: the schedule tick a run was started for, and each schedule's
/// last tick handled (what makes a tick start one run across hosts, and a
/// host that was down start one catch-up run); a run's concurrency key,
/// limit and priority, and the queued runs in the order they start.
fn version_4(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "ALTER TABLE runs ADD COLUMN tick INTEGER;
         CREATE INDEX runs_of_ticks_open ON runs (workflow, status) WHERE tick IS NOT NULL;
         CREATE INDEX runs_of_ticks_finished ON runs (workflow, finished_at) WHERE tick IS NOT NULL;
         CREATE TABLE schedules (workflow TEXT PRIMARY KEY, last_tick INTEGER NOT NULL, pending_tick INTEGER, pattern TEXT NOT NULL);
         ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
         ALTER TABLE runs ADD COLUMN concurrency_limit INTEGER;
         ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX runs_by_key ON runs (workflow, concurrency_key, status) WHERE concurrency_key IS NOT NULL;
         CREATE INDEX runs_queued ON runs (workflow, concurrency_key, priority DESC, created_at) WHERE status = 'queued';",
    )
}

/// Version 5: the trace a run's spans belong to (so a resume on any host
/// continues it).
fn version_5(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("ALTER TABLE runs ADD COLUMN traceparent TEXT;")
}

/// Version 6: no table changes. A *started* record's body may now hold,
/// instead of its input, the number of the record whose output the input
/// is (`{"step": ..., "input_of": seq}`): a host that knows only version 5
/// would read such a step as having had no input, so it must refuse the
/// file.
fn version_6(_conn: &Connection) -> rusqlite::Result<()> {
    Ok(())
}

/// The migrations, in order: the one at index i takes the schema from
/// version i to i + 1.
const MIGRATIONS: [fn(&Connection) -> rusqlite::Result<()>; VERSION as usize] = [
    version_1, version_2, version_3, version_4, version_5, version_6,
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The file comes from a newer Wasaga.
    #[error(
        "it was written by a newer Wasaga (schema version {found}; this host knows versions up to {VERSION}): run a host at least as new as the one that wrote it"
    )]
    Newer {
        /// The file's version.
        found: i64,
    },
}

/// Brings the schema of the database behind `conn` to [`VERSION`], applying
/// the missing migrations in one write transaction (two processes opening
/// one new file apply them once: the second finds them done).
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated.
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > VERSION {
        return Err(SchemaError::Newer { found: current });
    }
    for migration in &MIGRATIONS[current.max(0) as usize..] {
        migration(&tx)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}
