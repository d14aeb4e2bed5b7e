//! The entity store's rows in SQLite (the state file, beside the journal):
//! the SQL of [`Backend`]. A fenced write checks the run's lease epoch in
//! the journal's `runs` table in the same statement; a single-statement
//! write is committed in the journal's group commits. It may not apply the
//! store's rules (managed fields, derived ids): those are in `store`.

use std::sync::{Arc, Mutex};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::store::{
    Backend, MANAGED, NewRow, Query, Result, StoreError, entity_of, field_path, lease_lost,
};
use crate::journal::SharedCommits;
use crate::saga::{FailureKind, Fence};

/// Entity rows in one SQLite database.
pub struct SqliteEntities {
    conn: Arc<Mutex<Connection>>,
    /// The journal's group commits, when the database is a state file the
    /// journal shares: a single-statement write joins them instead of
    /// committing alone.
    commits: Option<SharedCommits>,
}

/// The condition a fenced write adds, its run and epoch the statement's
/// parameters `n` and `n + 1`: the run's epoch is still the fence's (always
/// true for an unfenced write, whose run is NULL).
fn fenced(n: usize) -> String {
    format!(
        "(?{n} IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = ?{n} AND lease_epoch = ?{}))",
        n + 1
    )
}

/// The insert of a new row, fenced: prepared once per connection (its
/// text is the same every time; `format!` and parsing it per call showed
/// in profiles of `host serve`).
static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO entities (collection, id, data, created_at, updated_at, created_by)
         SELECT ?1, ?2, ?3, ?4, ?4, ?5 WHERE {}
         ON CONFLICT DO NOTHING",
        fenced(6)
    )
});

/// The delete of a row, fenced (see [`INSERT`]).
static DELETE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "DELETE FROM entities WHERE collection = ?1 AND id = ?2 AND {}",
        fenced(3)
    )
});

/// Sets `deleted_at` of a row not soft-deleted (`SOFT_DELETE`) or clears
/// it on one that is (`RESTORE`), fenced (see [`INSERT`]).
static SOFT_DELETE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| set_deleted_sql("IS NULL"));
static RESTORE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| set_deleted_sql("IS NOT NULL"));

fn set_deleted_sql(was_deleted: &str) -> String {
    format!(
        "UPDATE entities SET deleted_at = ?3, updated_at = ?4
         WHERE collection = ?1 AND id = ?2 AND deleted_at {was_deleted} AND {}",
        fenced(5)
    )
}

fn fence_params(fence: Option<&Fence>) -> (Option<&str>, Option<i64>) {
    (fence.map(|f| &*f.run), fence.map(|f| f.epoch as i64))
}

impl SqliteEntities {
    /// Rows in memory (for tests and benchmarks).
    pub fn in_memory() -> rusqlite::Result<SqliteEntities> {
        SqliteEntities::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> rusqlite::Result<SqliteEntities> {
        // One schema for the whole state file (the journal's migrations).
        crate::journal::sqlite_schema::migrate(&mut conn).map_err(|e| match e {
            crate::journal::sqlite_schema::SchemaError::Sqlite(e) => e,
            newer => rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(newer.to_string()),
            ),
        })?;
        Ok(SqliteEntities {
            conn: Arc::new(Mutex::new(conn)),
            commits: None,
        })
    }

    /// The rows over the state file's journal connection (see
    /// `SqliteJournal::connection`: its schema is migrated, its pragmas set),
    /// its single-statement writes committed in the journal's group commits.
    pub fn sharing(commits: SharedCommits) -> SqliteEntities {
        SqliteEntities {
            conn: commits.connection(),
            commits: Some(commits),
        }
    }

    /// Runs a single-statement write: in the journal's next group commit,
    /// waited for as a task, when the store shares the state file (under
    /// load, each write was a transaction of its own), else alone; how
    /// many rows it changed.
    async fn write(&self, sql: &'static str, params: Vec<SqlValue>) -> Result<usize> {
        match &self.commits {
            Some(commits) => commits.execute(sql, params).await.map_err(|e| {
                StoreError::step(FailureKind::Database, format!("entities store: {e}"))
            }),
            None => Ok(self
                .conn()
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
        }
    }

    fn conn(&self) -> crate::journal::Gated<'_> {
        crate::journal::lock_gated(&self.conn)
    }

    /// After a fenced write changed nothing: the fence's error if it no
    /// longer holds, else `Ok(false)` (no such row).
    fn unchanged(&self, fence: Option<&Fence>) -> Result<bool> {
        if let Some(fence) = fence {
            let holds = self
                .conn()
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND lease_epoch = ?2")?
                .exists(params![&*fence.run, fence.epoch as i64])?;
            if !holds {
                return Err(lease_lost(fence));
            }
        }
        Ok(false)
    }
}

/// A text parameter, owned (a grouped write waits in a queue).
fn text(value: &str) -> SqlValue {
    SqlValue::Text(value.to_string())
}

/// A fenced write's parameters: `values`, then the fence's run and epoch
/// (see [`fenced`]).
fn with_fence(values: impl IntoIterator<Item = SqlValue>, fence: Option<&Fence>) -> Vec<SqlValue> {
    let (run, epoch) = fence_params(fence);
    let fence = [
        run.map_or(SqlValue::Null, text),
        epoch.map_or(SqlValue::Null, SqlValue::Integer),
    ];
    values.into_iter().chain(fence).collect()
}

fn row_to_entity(row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let data: String = row.get(1)?;
    Ok(entity_of(
        row.get(0)?,
        &data,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

#[async_trait::async_trait]
impl Backend for SqliteEntities {
    async fn insert(&self, fence: Option<&Fence>, row: NewRow<'_>) -> Result<bool> {
        let inserted = self
            .write(
                INSERT.as_str(),
                with_fence(
                    [
                        text(row.collection),
                        text(row.id),
                        text(row.data),
                        text(row.at),
                        row.created_by.map_or(SqlValue::Null, text),
                    ],
                    fence,
                ),
            )
            .await?;
        if inserted == 0 {
            self.unchanged(fence)?;
        }
        Ok(inserted == 1)
    }

    fn created_by(&self, collection: &str, id: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT created_by FROM entities WHERE collection = ?1 AND id = ?2")?
            .query_row(params![collection, id], |row| row.get(0))
            .optional()?)
    }

    fn fetch(&self, collection: &str, id: &str) -> Result<Option<Value>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT id, data, created_at, updated_at, deleted_at FROM entities
                 WHERE collection = ?1 AND id = ?2",
            )?
            .query_row(params![collection, id], row_to_entity)
            .optional()?)
    }

    fn update(
        &self,
        fence: Option<&Fence>,
        collection: &str,
        id: &str,
        changes: Map<String, Value>,
        at: &str,
    ) -> Result<bool> {
        let (run, epoch) = fence_params(fence);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .prepare_cached(
                "SELECT data FROM entities WHERE collection = ?1 AND id = ?2 AND deleted_at IS NULL",
            )?
            .query_row(params![collection, id], |row| row.get(0))
            .optional()?;
        let Some(current) = current else {
            drop(tx);
            drop(conn);
            return self.unchanged(fence);
        };
        let mut map: Map<String, Value> = serde_json::from_str(&current).map_err(|e| {
            StoreError::step(
                FailureKind::Database,
                format!("stored entity is corrupt: {e}"),
            )
        })?;
        map.extend(changes);
        let changed = tx
            .prepare_cached(&format!(
                "UPDATE entities SET data = ?3, updated_at = ?4 WHERE collection = ?1 AND id = ?2 AND {}",
                fenced(5)
            ))?
            .execute(params![
                collection,
                id,
                Value::Object(map).to_string(),
                at,
                run,
                epoch
            ])?;
        tx.commit()?;
        drop(conn);
        if changed == 0 {
            return self.unchanged(fence);
        }
        Ok(true)
    }

    async fn delete(&self, fence: Option<&Fence>, collection: &str, id: &str) -> Result<bool> {
        let deleted = self
            .write(
                DELETE.as_str(),
                with_fence([text(collection), text(id)], fence),
            )
            .await?;
        if deleted == 0 {
            return self.unchanged(fence);
        }
        Ok(true)
    }

    async fn set_deleted(
        &self,
        fence: Option<&Fence>,
        collection: &str,
        id: &str,
        deleted_at: Option<&str>,
        at: &str,
    ) -> Result<bool> {
        let sql = if deleted_at.is_some() {
            &SOFT_DELETE
        } else {
            &RESTORE
        };
        let changed = self
            .write(
                sql.as_str(),
                with_fence(
                    [
                        text(collection),
                        text(id),
                        deleted_at.map_or(SqlValue::Null, text),
                        text(at),
                    ],
                    fence,
                ),
            )
            .await?;
        if changed == 0 {
            return self.unchanged(fence);
        }
        Ok(true)
    }

    fn list(&self, collection: &str, query: &Query) -> Result<Vec<Value>> {
        let mut sql = String::from(
            "SELECT id, data, created_at, updated_at, deleted_at FROM entities WHERE collection = ?",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![collection.to_string().into()];
        if !query.with_deleted {
            sql.push_str(" AND deleted_at IS NULL");
        }
        for filter in &query.filters {
            if MANAGED.contains(&filter.field.as_str()) {
                sql.push_str(&format!(" AND {} IS json_extract(?, '$')", filter.field));
            } else {
                sql.push_str(" AND json_extract(data, ?) IS json_extract(?, '$')");
                let quoted: Vec<String> = field_path(&filter.field)?
                    .iter()
                    .map(|p| format!("\"{p}\""))
                    .collect();
                args.push(format!("$.{}", quoted.join(".")).into());
            }
            args.push(filter.value.to_string().into());
        }
        let limit = query.limit.unwrap_or(super::LIST_CAP).min(super::LIST_CAP);
        sql.push_str(" ORDER BY rowid LIMIT ? OFFSET ?");
        args.push(i64::from(limit).into());
        args.push(i64::from(query.offset).into());
        let conn = self.conn();
        let mut statement = conn.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(args), row_to_entity)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn count(&self, collection: &str) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM entities WHERE collection = ?1",
            params![collection],
            |row| row.get(0),
        )?)
    }
}
