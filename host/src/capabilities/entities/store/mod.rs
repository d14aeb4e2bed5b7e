//! The entity store: collections of JSON objects with host-managed `id`,
//! `created_at`, `updated_at`, `deleted_at`, in the state's database (the
//! SQLite state file, or PostgreSQL). The per-workflow state of the
//! `entities` capability: the rules (managed fields, derived ids, fencing)
//! are here, the SQL in the backends. It knows nothing of WASM (its errors
//! are [`StoreError`]s). Its tests, the same on both backends, are in
//! `tests.rs`.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::postgres::PgEntities;
use super::sqlite::SqliteEntities;
use crate::saga::{FailureKind, Fence};

/// Fields the store manages; a step cannot set them.
pub(super) const MANAGED: [&str; 4] = ["id", "created_at", "updated_at", "deleted_at"];

/// The most entities one `list` returns.
pub const LIST_CAP: u32 = 1000;

/// A store of entity collections in one database.
pub struct EntityStore {
    backend: Box<dyn Backend>,
}

/// A new row, as [`EntityStore::create_once`] hands it to the backend.
pub(super) struct NewRow<'a> {
    pub collection: &'a str,
    pub id: &'a str,
    /// The fields, as JSON text of an object.
    pub data: &'a str,
    pub at: &'a str,
    /// The creating call and ordinal, for a derived id.
    pub created_by: Option<&'a str>,
}

/// What a database does for the store: plain reads and writes of rows,
/// each write applied only while `fence` (the run's lease) holds, in the
/// same statement or transaction. The store's rules sit above it.
///
/// The single-statement writes are `async`: on the state file their caller
/// (a guest's call, on a tokio worker) waits for them as a task, and the
/// worker goes on with other runs meanwhile (PostgreSQL's wait on their
/// thread: see its `write`). The others wait on their thread.
#[async_trait::async_trait]
pub(super) trait Backend: Send + Sync {
    /// Inserts the row unless its key exists; whether it did.
    async fn insert(&self, fence: Option<&Fence>, row: NewRow<'_>) -> Result<bool>;
    /// The `created_by` of a row (outer `None`: no such row).
    fn created_by(&self, collection: &str, id: &str) -> Result<Option<Option<String>>>;
    /// A row as an entity, soft-deleted or not.
    fn fetch(&self, collection: &str, id: &str) -> Result<Option<Value>>;
    /// Merges `changes` into a row that is not soft-deleted, atomically;
    /// whether there was one.
    fn update(
        &self,
        fence: Option<&Fence>,
        collection: &str,
        id: &str,
        changes: Map<String, Value>,
        at: &str,
    ) -> Result<bool>;
    /// Removes a row; whether there was one.
    async fn delete(&self, fence: Option<&Fence>, collection: &str, id: &str) -> Result<bool>;
    /// Sets (`Some`) or clears (`None`) `deleted_at` of a row that is not
    /// (or is) soft-deleted; whether there was one.
    async fn set_deleted(
        &self,
        fence: Option<&Fence>,
        collection: &str,
        id: &str,
        deleted_at: Option<&str>,
        at: &str,
    ) -> Result<bool>;
    /// The rows that match, oldest first.
    fn list(&self, collection: &str, query: &Query) -> Result<Vec<Value>>;
    /// How many rows a collection holds.
    fn count(&self, collection: &str) -> Result<i64>;
}

/// The error of a write whose fence no longer holds.
pub(super) fn lease_lost(fence: &Fence) -> StoreError {
    StoreError::permanent(
        FailureKind::Host,
        format!(
            "this host lost its lease on run {}: another host took the run over, so this call's entity writes are refused",
            fence.run
        ),
    )
}

/// One equality filter of a `list`.
#[derive(Debug, Clone)]
pub struct Filter {
    /// A field name or dotted path.
    pub field: String,
    /// The value it must equal.
    pub value: Value,
}

/// What a `list` returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// All must hold.
    pub filters: Vec<Filter>,
    /// Include soft-deleted entities.
    pub with_deleted: bool,
    /// At most this many (capped at [`LIST_CAP`]).
    pub limit: Option<u32>,
    /// Skip this many.
    pub offset: u32,
}

/// A failed store operation, as the step that asked will see it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// The category.
    pub kind: FailureKind,
    /// For people.
    pub message: String,
    /// Whether retrying can help.
    pub permanent: bool,
}

impl StoreError {
    /// A transient error.
    pub fn step(kind: FailureKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
            permanent: false,
        }
    }

    /// A permanent error.
    pub fn permanent(kind: FailureKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> StoreError {
        StoreError::step(FailureKind::Database, format!("entities store: {err}"))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        StoreError::step(FailureKind::Database, format!("entities store: {err}"))
    }
}

pub(super) type Result<T> = std::result::Result<T, StoreError>;

fn not_found(collection: &str, id: &str) -> StoreError {
    StoreError::step(
        FailureKind::NotFound,
        format!("{collection} '{id}' was not found"),
    )
}

fn invalid(message: String) -> StoreError {
    StoreError::permanent(FailureKind::InvalidData, message)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Checks that `data` is an object without host-managed fields (but `id`, if allowed).
fn fields(data: Value, allow_id: bool) -> Result<Map<String, Value>> {
    let Value::Object(map) = data else {
        return Err(invalid("an entity must be a JSON object".to_string()));
    };
    for key in MANAGED {
        if map.contains_key(key) && !(allow_id && key == "id") {
            return Err(invalid(format!(
                "the field '{key}' is managed by the host and cannot be set"
            )));
        }
    }
    Ok(map)
}

/// `<collection>_<32 hex digits>` from a hash of the creating call and the
/// entity's place among its creates: stable across attempts, unguessable
/// across runs (the run id is random).
fn derived_id(collection: &str, call: &str, ordinal: u32) -> String {
    let hash = blake3::hash(format!("{collection}\n{call}\n{ordinal}").as_bytes());
    let hex = hash.to_hex();
    format!("{collection}_{}", &hex[..32])
}

/// The parts of a dotted field path (`a.b`), if it is one.
pub(super) fn field_path(field: &str) -> Result<Vec<&str>> {
    let valid = !field.is_empty()
        && field.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        return Err(StoreError::permanent(
            FailureKind::InvalidArgument,
            format!("'{field}' is not a field name or dotted path"),
        ));
    }
    Ok(field.split('.').collect())
}

impl EntityStore {
    /// The store in the state file, over the journal's connection (see
    /// `SqliteJournal::connection`), its single-statement writes committed
    /// with the journal's writes.
    pub fn sharing(commits: crate::journal::SharedCommits) -> EntityStore {
        EntityStore {
            backend: Box::new(SqliteEntities::sharing(commits)),
        }
    }

    /// A store in memory (for tests and benchmarks).
    pub fn in_memory() -> std::result::Result<EntityStore, rusqlite::Error> {
        Ok(EntityStore {
            backend: Box::new(SqliteEntities::in_memory()?),
        })
    }

    /// The store in a PostgreSQL database (its schema already migrated).
    pub fn postgres(database: Arc<crate::postgres::Database>) -> EntityStore {
        EntityStore {
            backend: Box::new(PgEntities::new(database)),
        }
    }

    /// Stores a new entity; returns it with its managed fields.
    pub async fn create(&self, collection: &str, data: Value) -> Result<Value> {
        self.create_once(collection, data, None, None).await
    }

    /// Stores a new entity, the `origin.1`-th one the call named `origin.0`
    /// creates. Its id is derived from both (unless `data` has one), so when
    /// the call runs again (a retry, or a re-invoke after a crash) the same
    /// create returns the entity the earlier attempt stored instead of a
    /// duplicate: entity creates happen once per call.
    pub async fn create_once(
        &self,
        collection: &str,
        data: Value,
        origin: Option<(&str, u32)>,
        fence: Option<&Fence>,
    ) -> Result<Value> {
        let mut map = fields(data, true)?;
        let (id, derived) = match (map.remove("id"), origin) {
            (Some(Value::String(id)), _) if !id.is_empty() => (id, false),
            (Some(_), _) => {
                return Err(invalid("an entity's id must be a non-empty string".into()));
            }
            (None, Some((call, ordinal))) => (derived_id(collection, call, ordinal), true),
            (None, None) => (
                format!("{collection}_{}", uuid::Uuid::now_v7().simple()),
                false,
            ),
        };
        let at = now();
        // Which create of which call made a derived row: a later attempt of
        // that call finds its own row, while a row another step planted at
        // the id it could compute is not taken for it.
        let creator = origin
            .filter(|_| derived)
            .map(|(call, ordinal)| format!("{call}\n{ordinal}"));
        let data = Value::Object(map).to_string();
        let inserted = self
            .backend
            .insert(
                fence,
                NewRow {
                    collection,
                    id: &id,
                    data: &data,
                    at: &at,
                    created_by: creator.as_deref(),
                },
            )
            .await?;
        if !inserted && derived {
            let created_by = self.backend.created_by(collection, &id)?.flatten();
            if created_by == creator {
                // Stored by an earlier attempt of this very call.
                return self
                    .fetch(collection, &id, true)?
                    .ok_or_else(|| not_found(collection, &id));
            }
            return Err(StoreError::permanent(
                FailureKind::Duplicate,
                format!(
                    "{collection} '{id}' already exists and was not created by this call (another step stored a row at the id this create derives)"
                ),
            ));
        }
        if !inserted {
            return Err(StoreError::permanent(
                FailureKind::Duplicate,
                format!("{collection} '{id}' already exists"),
            ));
        }
        // The row is what was just written: built from it, as a read of
        // it would be, without taking the connection again.
        Ok(entity_of(id, &data, at.clone(), at, None))
    }

    /// The entity, or `None`. Soft-deleted ones only with `with_deleted`.
    pub fn fetch(&self, collection: &str, id: &str, with_deleted: bool) -> Result<Option<Value>> {
        let row = self.backend.fetch(collection, id)?;
        Ok(row.filter(|e| with_deleted || e["deleted_at"].is_null()))
    }

    /// The entity; `not-found` if missing or soft-deleted.
    pub fn get(&self, collection: &str, id: &str) -> Result<Value> {
        self.fetch(collection, id, false)?
            .ok_or_else(|| not_found(collection, id))
    }

    /// Merges `data`'s top-level fields into the entity (atomically: a
    /// concurrent update from another process is not lost).
    pub fn update(
        &self,
        collection: &str,
        id: &str,
        data: Value,
        fence: Option<&Fence>,
    ) -> Result<Value> {
        let changes = fields(data, false)?;
        if !self
            .backend
            .update(fence, collection, id, changes, &now())?
        {
            return Err(not_found(collection, id));
        }
        self.get(collection, id)
    }

    /// Removes the entity for good.
    pub async fn delete(&self, collection: &str, id: &str, fence: Option<&Fence>) -> Result<()> {
        if !self.backend.delete(fence, collection, id).await? {
            return Err(not_found(collection, id));
        }
        Ok(())
    }

    /// Marks the entity deleted; returns it.
    pub async fn soft_delete(
        &self,
        collection: &str,
        id: &str,
        fence: Option<&Fence>,
    ) -> Result<Value> {
        let at = now();
        if !self
            .backend
            .set_deleted(fence, collection, id, Some(&at), &at)
            .await?
        {
            return Err(not_found(collection, id));
        }
        self.fetch(collection, id, true)?
            .ok_or_else(|| not_found(collection, id))
    }

    /// Undoes a soft delete; returns the entity.
    pub async fn restore(
        &self,
        collection: &str,
        id: &str,
        fence: Option<&Fence>,
    ) -> Result<Value> {
        let entity = self
            .fetch(collection, id, true)?
            .ok_or_else(|| not_found(collection, id))?;
        if entity["deleted_at"].is_null() {
            return Err(StoreError::permanent(
                FailureKind::UnexpectedState,
                format!("{collection} '{id}' is not deleted"),
            ));
        }
        self.backend
            .set_deleted(fence, collection, id, None, &now())
            .await?;
        self.get(collection, id)
    }

    /// The entities that match, oldest first.
    pub fn list(&self, collection: &str, query: &Query) -> Result<Vec<Value>> {
        for filter in &query.filters {
            if !MANAGED.contains(&filter.field.as_str()) {
                field_path(&filter.field)?;
            }
        }
        self.backend.list(collection, query)
    }

    /// How many entities a collection holds (soft-deleted included).
    pub fn count(&self, collection: &str) -> Result<i64> {
        self.backend.count(collection)
    }
}

/// An entity from its columns: the id, the fields' JSON text, the times.
pub(super) fn entity_of(
    id: String,
    data: &str,
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
) -> Value {
    let mut map: Map<String, Value> = serde_json::from_str(data).unwrap_or_default();
    let mut entity = Map::with_capacity(map.len() + 4);
    entity.insert("id".into(), Value::String(id));
    entity.append(&mut map);
    entity.insert("created_at".into(), Value::String(created_at));
    entity.insert("updated_at".into(), Value::String(updated_at));
    entity.insert(
        "deleted_at".into(),
        deleted_at.map(Value::String).unwrap_or(Value::Null),
    );
    Value::Object(entity)
}

/// A guest's JSON, under the rules of every JSON that enters the host
/// (nesting, numbers): what is stored can always be read back into a report.
pub(super) fn parse(data: &str, what: &str) -> Result<Value> {
    let json = crate::json::Json::parse(data.to_string())
        .map_err(|e| invalid(format!("{what} is not JSON: {e}")))?;
    Ok(json.value().clone())
}

#[cfg(test)]
mod tests;
