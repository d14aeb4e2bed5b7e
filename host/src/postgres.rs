//! The connection to a PostgreSQL database shared by several hosts: a pool
//! of connections on a runtime of its own, and the schema's versioned
//! migrations (journal and entities), applied at connect under an advisory
//! lock. It may not know runs or entities: their SQL is in the journal's and
//! the entity store's PostgreSQL backends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::journal::SyncMode;

/// A pool of connections to one database (and schema, by `search_path`).
pub struct Database {
    pool: Pool,
    /// The pool's futures run here: the journal and the entity store are
    /// synchronous traits, called from any thread (a runtime's worker
    /// included), which waits for the answer from this runtime.
    runtime: Option<tokio::runtime::Runtime>,
    /// The URL without its password, for messages.
    shown: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        // Dropped from async code too: never block on the runtime's end.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The newest schema this host knows; a database at a higher version was
/// migrated by a newer Wasaga and is refused.
pub const SCHEMA_VERSION: i64 = 5;

/// The key of the advisory lock migrations hold (any fixed number: hosts
/// of one database agree on it).
const MIGRATION_LOCK: i64 = 0x7761_7361_6761; // "wasaga"

/// Version 1: the journal's tables (runs with their lease epoch, records,
/// pinned manifests) and the entities table.
const VERSION_1: &str = "
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    manifest TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    extension_dirs TEXT NOT NULL,
    input TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    partial BOOLEAN NOT NULL DEFAULT FALSE,
    output TEXT,
    error TEXT,
    errors TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    components TEXT,
    lease_epoch BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_transaction ON runs (workflow, transaction_id, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_created ON runs (created_at, id);
CREATE TABLE records (
    id BIGSERIAL PRIMARY KEY,
    run TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    action TEXT,
    attempt INTEGER,
    body TEXT
);
CREATE UNIQUE INDEX records_by_run ON records (run, seq);
CREATE TABLE manifests (
    hash TEXT PRIMARY KEY,
    files TEXT NOT NULL,
    used_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE entities (
    seq BIGSERIAL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    created_by TEXT,
    PRIMARY KEY (collection, id)
);
CREATE INDEX entities_in_order ON entities (collection, seq);
";

/// Version 2: when a waiting run wakes (a sleep's end, an async step's
/// deadline), indexed for the timer sweep; the run a rerun runs again; how
/// many times a run was taken over from a host that died executing it.
const VERSION_2: &str = "
ALTER TABLE runs ADD COLUMN wake_at BIGINT;
CREATE INDEX runs_by_wake ON runs (wake_at) WHERE wake_at IS NOT NULL;
ALTER TABLE runs ADD COLUMN rerun_of TEXT;
CREATE INDEX runs_by_rerun ON runs (rerun_of) WHERE rerun_of IS NOT NULL;
ALTER TABLE runs ADD COLUMN crashes BIGINT NOT NULL DEFAULT 0;
";

/// Version 3: the schedule tick a run was started for, and each schedule's
/// last tick handled (what makes a tick start one run across hosts, and a
/// host that was down start one catch-up run); a run's concurrency key,
/// limit and priority, and the queued runs in the order they start.
const VERSION_3: &str = "
ALTER TABLE runs ADD COLUMN tick BIGINT;
CREATE INDEX runs_of_ticks_open ON runs (workflow, status) WHERE tick IS NOT NULL;
CREATE INDEX runs_of_ticks_finished ON runs (workflow, finished_at) WHERE tick IS NOT NULL;
CREATE TABLE schedules (workflow TEXT PRIMARY KEY, last_tick BIGINT NOT NULL, pending_tick BIGINT, pattern TEXT NOT NULL);
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
ALTER TABLE runs ADD COLUMN concurrency_limit BIGINT;
ALTER TABLE runs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_by_key ON runs (workflow, concurrency_key, status) WHERE concurrency_key IS NOT NULL;
CREATE INDEX runs_queued ON runs (workflow, concurrency_key, priority DESC, created_at) WHERE status = 'queued';
";

/// Version 4: the trace a run's spans belong to (so a resume on any host
/// continues it).
const VERSION_4: &str = "ALTER TABLE runs ADD COLUMN traceparent TEXT;";

/// Version 5: no table changes. A *started* record's body may now hold,
/// instead of its input, the number of the record whose output the input
/// is (`{"step": ..., "input_of": seq}`): a host that knows only version 4
/// would read such a step as having had no input, so it must refuse the
/// database.
const VERSION_5: &str = "";

/// The migrations, in order: the one at index i takes the schema from
/// version i to i + 1.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] =
    [VERSION_1, VERSION_2, VERSION_3, VERSION_4, VERSION_5];

/// How many connections one host keeps at most.
const POOL_SIZE: usize = 16;

impl Database {
    /// Connects to the database at `url` (`postgres://user@host:port/db`,
    /// with libpq's parameters, e.g. `?options=-csearch_path%3Dmy_schema`),
    /// each connection committing as `sync` says, and migrates its schema.
    pub fn connect(url: &str, sync: SyncMode) -> Result<Arc<Database>, String> {
        let shown = hide_password(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("'{shown}' is not a PostgreSQL URL: {e}"))?;
        // `normal`: a commit returns before its WAL reaches the disk (a host
        // crash loses nothing; a database server crash may lose the last
        // ones). `full`: it waits for the flush. Notices (a migration's
        // "already exists, skipping") stay out of the log.
        let commit = match sync {
            SyncMode::Normal => "off",
            SyncMode::Full => "on",
        };
        // READ COMMITTED whatever the database's or role's default: the
        // journal's fences re-check a row's epoch after waiting for its
        // lock, and a start's lookup must see the run of whoever held the
        // transaction id's lock before it (a fresh snapshot per statement).
        // Appended after the URL's own options, so it wins over them.
        let options = format!(
            "{} -c synchronous_commit={commit} -c statement_timeout=60s -c client_min_messages=warning \
             -c default_transaction_isolation=read\\ committed",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A connection the network swallowed is noticed, and a statement
        // stuck on a lock ends: a host never waits on the database for ever.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(15));
        config.tcp_user_timeout(Duration::from_secs(30));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasaga-postgres")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL client: {e}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot set up connections to {shown}: {e}"))?;
        let database = Arc::new(Database {
            pool,
            runtime: Some(runtime),
            shown,
        });
        let migrated = database.run(|pool| async move { migrate(&pool).await });
        match migrated {
            Ok(()) => Ok(database),
            Err(e) => Err(format!("cannot use the database {}: {e}", database.shown)),
        }
    }

    /// Runs `body` with the pool on the database's runtime and waits for it.
    pub fn run<T, F, Fut>(&self, body: F) -> T
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        // The answer comes back over a plain channel, not by polling the
        // task's JoinHandle: polled from inside another runtime's task, a
        // JoinHandle spends that task's cooperative budget, and once it is
        // spent it answers "not yet" at once, forever (a busy loop, found
        // by the benchmark).
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.spawn(body, move |done| {
            let _ = answer.send(done);
        });
        // Off the async workers while it waits, where the runtime allows
        // (a multi-threaded one): other tasks go on meanwhile.
        let wait = move || answered.recv();
        let answered = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        unwrap_answer(answered.ok())
    }

    /// [`Database::run`] for a caller that waits as a task: `body` starts
    /// on the database's runtime now, and the future answers once it is
    /// done, without holding a thread meanwhile (the oneshot is awaited by
    /// the task, which returns to its scheduler between polls).
    pub fn run_queued<T, F, Fut>(&self, body: F) -> impl Future<Output = T> + Send + 'static
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.spawn(body, move |done| {
            let _ = answer.send(done);
        });
        async move { unwrap_answer(answered.await.ok()) }
    }

    /// Starts `body` on the database's runtime; `answer` gets its result,
    /// or its panic.
    fn spawn<T, F, Fut>(
        &self,
        body: F,
        answer: impl FnOnce(std::thread::Result<T>) + Send + 'static,
    ) where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        use futures::FutureExt;
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the database");
        let work = std::panic::AssertUnwindSafe(body(self.pool.clone())).catch_unwind();
        runtime.spawn(async move { answer(work.await) });
    }

    /// The URL, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// What `body` gave back to its waiter: its value, or its panic carried
/// over; none if the database's runtime stopped before it answered.
fn unwrap_answer<T>(answered: Option<std::thread::Result<T>>) -> T {
    match answered {
        Some(Ok(value)) => value,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => panic!("the PostgreSQL client's runtime stopped"),
    }
}

/// A failure to get a connection or run a statement, as text.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection could be had.
    #[error("no connection to PostgreSQL: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// The schema is newer than this host.
    #[error(
        "its schema is at version {0}, written by a newer Wasaga (this host knows versions up to {SCHEMA_VERSION}): run a host at least as new as the one that migrated it"
    )]
    Newer(i64),
}

async fn migrate(pool: &Pool) -> Result<(), PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Two hosts starting at once: the second waits here, then finds the
    // migrations applied.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS wasaga_schema (version BIGINT NOT NULL)")
        .await?;
    let current: Option<i64> = tx
        .query_opt("SELECT max(version) FROM wasaga_schema", &[])
        .await?
        .and_then(|row| row.get(0));
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(PgError::Newer(current));
    }
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    for migration in &MIGRATIONS[current as usize..] {
        tx.batch_execute(migration).await?;
    }
    tx.execute("DELETE FROM wasaga_schema", &[]).await?;
    tx.execute(
        "INSERT INTO wasaga_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `url` with the password replaced by `***`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Whether `state` names a PostgreSQL database rather than a file.
pub fn is_url(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            hide_password("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(hide_password("postgres://u@h/db"), "postgres://u@h/db");
        assert!(is_url("postgresql://h/db") && !is_url("./state.db"));
    }

    /// A URL (as a database's or a role's default could) asking for
    /// REPEATABLE READ gets READ COMMITTED, which the journal relies on.
    #[test]
    fn connections_read_committed_whatever_the_database_asks() {
        let schema = testing::TestSchema::new();
        let url = format!(
            "{}%20-cdefault_transaction_isolation%3Drepeatable%5C%20read",
            schema.url
        );
        let database = Database::connect(&url, SyncMode::Normal).unwrap();
        let level: String = database.run(|pool| async move {
            let client = pool.get().await.unwrap();
            client
                .query_one("SHOW transaction_isolation", &[])
                .await
                .unwrap()
                .get(0)
        });
        assert_eq!(level, "read committed");
    }
}

/// A PostgreSQL schema of its own for one test, dropped when the test ends:
/// tests of the journal, the entity store and the black-box suites run
/// against the real server `WASAGA_TEST_POSTGRES` names (default: the
/// project machines' `postgres://postgres@127.0.0.1:5432/test`).
#[doc(hidden)]
pub mod testing {
    /// The server the tests use.
    pub fn server_url() -> String {
        std::env::var("WASAGA_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    /// A schema created for one test; `url` reaches it (by `search_path`).
    pub struct TestSchema {
        /// The URL of the schema.
        pub url: String,
        name: String,
    }

    fn on_server(sql: String) -> Result<(), String> {
        // A thread of its own: callable from async tests and from `Drop`.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let url = server_url();
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot reach the test PostgreSQL at {url} ({e}): start it (`tests/install-toolchains.sh` installs and starts one) or set WASAGA_TEST_POSTGRES"
                        )
                    })?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await.map_err(|e| e.to_string())
            })
        })
        .join()
        .map_err(|_| "the PostgreSQL helper thread panicked".to_string())?
    }

    impl TestSchema {
        /// A new, empty schema.
        pub fn new() -> TestSchema {
            let name = format!("wasaga_test_{}", uuid::Uuid::new_v4().simple());
            on_server(format!("CREATE SCHEMA {name}")).unwrap_or_else(|e| panic!("{e}"));
            let base = server_url();
            let separator = if base.contains('?') { '&' } else { '?' };
            TestSchema {
                url: format!("{base}{separator}options=-csearch_path%3D{name}"),
                name,
            }
        }
    }

    impl Default for TestSchema {
        fn default() -> TestSchema {
            TestSchema::new()
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            let _ = on_server(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}
