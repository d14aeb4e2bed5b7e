//! The entity store's rows in PostgreSQL (the journal's database): the SQL
//! of [`Backend`]. A fenced write locks the run's row (`FOR SHARE`) and
//! checks its lease epoch in the same statement, so a claim by another host
//! either waits for the write or makes it change nothing. It may not apply
//! the store's rules (managed fields, derived ids): those are in `store`.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;

use super::store::{
    Backend, MANAGED, NewRow, Query, Result, StoreError, entity_of, field_path, lease_lost,
};
use crate::postgres::{Database, PgError};
use crate::saga::{FailureKind, Fence};

/// Entity rows in one PostgreSQL database.
pub struct PgEntities {
    database: Arc<Database>,
}

/// The condition a fenced write adds, its run and epoch the statement's
/// parameters `n` and `n + 1` (an unfenced write passes a NULL run).
fn fenced(n: usize) -> String {
    format!(
        "(${n}::text IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = ${n} AND lease_epoch = ${}::bigint FOR SHARE))",
        n + 1
    )
}

fn fence_params(fence: Option<&Fence>) -> (Option<String>, Option<i64>) {
    (
        fence.map(|f| f.run.to_string()),
        fence.map(|f| f.epoch as i64),
    )
}

impl From<PgError> for StoreError {
    fn from(err: PgError) -> StoreError {
        StoreError::step(FailureKind::Database, format!("entities store: {err}"))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> StoreError {
        PgError::from(err).into()
    }
}

type Pool = deadpool_postgres::Pool;

/// After a fenced write changed nothing: the fence's error if it no longer
/// holds, else `Ok(false)` (no such row).
async fn unchanged(pool: &Pool, fence: Option<Fence>) -> Result<bool> {
    if let Some(fence) = fence {
        let client = pool.get().await?;
        let holds = client
            .query_opt(
                "SELECT 1 FROM runs WHERE id = $1 AND lease_epoch = $2",
                &[&fence.run.to_string(), &(fence.epoch as i64)],
            )
            .await?
            .is_some();
        if !holds {
            return Err(lease_lost(&fence));
        }
    }
    Ok(false)
}

fn row_to_entity(row: &tokio_postgres::Row) -> Value {
    let data: String = row.get(1);
    entity_of(row.get(0), &data, row.get(2), row.get(3), row.get(4))
}

impl PgEntities {
    /// The rows in `database` (its schema already migrated).
    pub fn new(database: Arc<Database>) -> PgEntities {
        PgEntities { database }
    }

    fn run<T, F, Fut>(&self, body: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.database.run(body)
    }

    /// A fenced single-statement write; whether it changed a row. It waits
    /// on its thread, not as a task (`Database::run_queued`), although its
    /// callers are async: a guest's call dropped while it waited (its
    /// deadline, a cancel) would leave the statement running on the
    /// database's runtime, where it could land after the call's failure was
    /// recorded, and after its compensation ran. (On SQLite a dropped write
    /// leaves the queue, or commits before anything queued after it.)
    fn write(&self, fence: Option<&Fence>, sql: String, args: Vec<Option<String>>) -> Result<bool> {
        let fence = fence.cloned();
        let (run, epoch) = fence_params(fence.as_ref());
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let mut params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            params.push(&run);
            params.push(&epoch);
            let changed = client.execute(&sql, &params).await.map_err(PgError::from)?;
            if changed == 0 {
                return unchanged(&pool, fence).await;
            }
            Ok(true)
        })
    }
}

#[async_trait::async_trait]
impl Backend for PgEntities {
    async fn insert(&self, fence: Option<&Fence>, row: NewRow<'_>) -> Result<bool> {
        self.write(
            fence,
            format!(
                "INSERT INTO entities (collection, id, data, created_at, updated_at, created_by)
                 SELECT $1, $2, $3, $4, $4, $5 WHERE {}
                 ON CONFLICT DO NOTHING",
                fenced(6)
            ),
            vec![
                Some(row.collection.to_string()),
                Some(row.id.to_string()),
                Some(row.data.to_string()),
                Some(row.at.to_string()),
                row.created_by.map(str::to_string),
            ],
        )
    }

    fn created_by(&self, collection: &str, id: &str) -> Result<Option<Option<String>>> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT created_by FROM entities WHERE collection = $1 AND id = $2",
                    &[&collection, &id],
                )
                .await
                .map_err(PgError::from)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn fetch(&self, collection: &str, id: &str) -> Result<Option<Value>> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT id, data, created_at, updated_at, deleted_at FROM entities
                     WHERE collection = $1 AND id = $2",
                )
                .await
                .map_err(PgError::from)?;
            let row = client
                .query_opt(&statement, &[&collection, &id])
                .await
                .map_err(PgError::from)?;
            Ok(row.as_ref().map(row_to_entity))
        })
    }

    fn update(
        &self,
        fence: Option<&Fence>,
        collection: &str,
        id: &str,
        changes: Map<String, Value>,
        at: &str,
    ) -> Result<bool> {
        let (collection, id, at) = (collection.to_string(), id.to_string(), at.to_string());
        let fence = fence.cloned();
        let (run, epoch) = fence_params(fence.as_ref());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            // Locked: a concurrent update from another host is not lost.
            let current = tx
                .query_opt(
                    "SELECT data FROM entities WHERE collection = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE",
                    &[&collection, &id],
                )
                .await
                .map_err(PgError::from)?;
            let Some(current) = current else {
                drop(tx);
                return unchanged(&pool, fence).await;
            };
            let current: String = current.get(0);
            let mut map: Map<String, Value> = serde_json::from_str(&current).map_err(|e| {
                StoreError::step(
                    FailureKind::Database,
                    format!("stored entity is corrupt: {e}"),
                )
            })?;
            map.extend(changes);
            let data = Value::Object(map).to_string();
            let changed = tx
                .execute(
                    &format!(
                        "UPDATE entities SET data = $3, updated_at = $4 WHERE collection = $1 AND id = $2 AND {}",
                        fenced(5)
                    ),
                    &[&collection, &id, &data, &at, &run, &epoch],
                )
                .await
                .map_err(PgError::from)?;
            tx.commit().await.map_err(PgError::from)?;
            if changed == 0 {
                return unchanged(&pool, fence).await;
            }
            Ok(true)
        })
    }

    async fn delete(&self, fence: Option<&Fence>, collection: &str, id: &str) -> Result<bool> {
        self.write(
            fence,
            format!(
                "DELETE FROM entities WHERE collection = $1 AND id = $2 AND {}",
                fenced(3)
            ),
            vec![Some(collection.to_string()), Some(id.to_string())],
        )
    }

    async fn set_deleted(
        &self,
        fence: Option<&Fence>,
        collection: &str,
        id: &str,
        deleted_at: Option<&str>,
        at: &str,
    ) -> Result<bool> {
        let was_deleted = if deleted_at.is_some() {
            "IS NULL"
        } else {
            "IS NOT NULL"
        };
        self.write(
            fence,
            format!(
                "UPDATE entities SET deleted_at = $3, updated_at = $4
                 WHERE collection = $1 AND id = $2 AND deleted_at {was_deleted} AND {}",
                fenced(5)
            ),
            vec![
                Some(collection.to_string()),
                Some(id.to_string()),
                deleted_at.map(str::to_string),
                Some(at.to_string()),
            ],
        )
    }

    fn list(&self, collection: &str, query: &Query) -> Result<Vec<Value>> {
        let mut sql = String::from(
            "SELECT id, data, created_at, updated_at, deleted_at FROM entities WHERE collection = $1",
        );
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(collection.to_string())];
        if !query.with_deleted {
            sql.push_str(" AND deleted_at IS NULL");
        }
        // Typed equality as in SQLite: a missing field equals null, 2 is
        // not "2".
        for filter in &query.filters {
            if MANAGED.contains(&filter.field.as_str()) {
                args.push(Box::new(filter.value.to_string()));
                sql.push_str(&format!(
                    " AND COALESCE(to_jsonb({}), 'null'::jsonb) = ${}::text::jsonb",
                    filter.field,
                    args.len()
                ));
            } else {
                let path: Vec<String> = field_path(&filter.field)?
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                args.push(Box::new(path));
                args.push(Box::new(filter.value.to_string()));
                sql.push_str(&format!(
                    " AND COALESCE(data::jsonb #> ${}::text[], 'null'::jsonb) = ${}::text::jsonb",
                    args.len() - 1,
                    args.len()
                ));
            }
        }
        let limit = query.limit.unwrap_or(super::LIST_CAP).min(super::LIST_CAP);
        args.push(Box::new(i64::from(limit)));
        args.push(Box::new(i64::from(query.offset)));
        sql.push_str(&format!(
            " ORDER BY seq LIMIT ${} OFFSET ${}",
            args.len() - 1,
            args.len()
        ));
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let params: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client.query(&sql, &params).await.map_err(PgError::from)?;
            Ok(rows.iter().map(row_to_entity).collect())
        })
    }

    fn count(&self, collection: &str) -> Result<i64> {
        let collection = collection.to_string();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*) FROM entities WHERE collection = $1",
                    &[&collection],
                )
                .await
                .map_err(PgError::from)?;
            Ok(row.get(0))
        })
    }
}
