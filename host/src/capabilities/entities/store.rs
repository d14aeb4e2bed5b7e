//! The entity store: collections of JSON objects in a real SQLite file (the
//! state file), with host-managed `id`, `created_at`, `updated_at`,
//! `deleted_at`. The per-workflow state of the `entities` capability; it
//! knows nothing of WASM (its errors are [`StoreError`]s).

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::saga::FailureKind;

/// Fields the store manages; a step cannot set them.
const MANAGED: [&str; 4] = ["id", "created_at", "updated_at", "deleted_at"];

/// The most entities one `list` returns.
pub const LIST_CAP: u32 = 1000;

/// A store of entity collections in one SQLite database.
pub struct EntityStore {
    conn: Mutex<Connection>,
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

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        StoreError::step(FailureKind::Database, format!("entities store: {err}"))
    }
}

type Result<T> = std::result::Result<T, StoreError>;

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

/// A dotted field path as an SQLite JSON path (`$.a.b`), if it is one.
fn json_path(field: &str) -> Result<String> {
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
    let quoted: Vec<String> = field.split('.').map(|p| format!("\"{p}\"")).collect();
    Ok(format!("$.{}", quoted.join(".")))
}

impl EntityStore {
    /// Opens (or creates) the store in the SQLite file at `path`.
    pub fn open(path: &Path) -> std::result::Result<EntityStore, rusqlite::Error> {
        // Processes opening one new state file at once may find it busy: retry.
        let mut wait = std::time::Duration::from_millis(5);
        loop {
            match Self::open_once(path) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && wait < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> std::result::Result<EntityStore, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // As the journal does: a new state file gives freed pages back.
        conn.pragma_update(None, "auto_vacuum", "incremental")?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "normal")?;
        // The journal's connection checkpoints the shared log in the background.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", crate::journal::WAL_BOUND as i64)?;
        let mut conn = conn;
        crate::journal::watch_log(&mut conn, crate::journal::RESTART_AT)?;
        EntityStore::init(conn)
    }

    /// A store in memory (for tests and benchmarks).
    pub fn in_memory() -> std::result::Result<EntityStore, rusqlite::Error> {
        EntityStore::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> std::result::Result<EntityStore, rusqlite::Error> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS entities (
                collection TEXT NOT NULL,
                id TEXT NOT NULL,
                data TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                deleted_at TEXT,
                created_by TEXT,
                PRIMARY KEY (collection, id)
            );",
        )?;
        // `created_by` came later: add it to a state file made before.
        let has_created_by = conn
            .prepare("SELECT 1 FROM pragma_table_info('entities') WHERE name = 'created_by'")?
            .exists([])?;
        if !has_created_by {
            conn.execute_batch("ALTER TABLE entities ADD COLUMN created_by TEXT")?;
        }
        Ok(EntityStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> crate::journal::Gated<'_> {
        crate::journal::lock_gated(&self.conn)
    }

    /// Stores a new entity; returns it with its managed fields.
    pub fn create(&self, collection: &str, data: Value) -> Result<Value> {
        self.create_once(collection, data, None)
    }

    /// Stores a new entity, the `origin.1`-th one the call named `origin.0`
    /// creates. Its id is derived from both (unless `data` has one), so when
    /// the call runs again (a retry, or a re-invoke after a crash) the same
    /// create returns the entity the earlier attempt stored instead of a
    /// duplicate: entity creates happen once per call.
    pub fn create_once(
        &self,
        collection: &str,
        data: Value,
        origin: Option<(&str, u32)>,
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
        let inserted = self.conn().execute(
            "INSERT INTO entities (collection, id, data, created_at, updated_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![collection, id, Value::Object(map).to_string(), at, creator],
        )?;
        if inserted == 0 && derived {
            let created_by: Option<String> = self
                .conn()
                .query_row(
                    "SELECT created_by FROM entities WHERE collection = ?1 AND id = ?2",
                    params![collection, id],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
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
        if inserted == 0 {
            return Err(StoreError::permanent(
                FailureKind::Duplicate,
                format!("{collection} '{id}' already exists"),
            ));
        }
        self.fetch(collection, &id, true)?
            .ok_or_else(|| not_found(collection, &id))
    }

    /// The entity, or `None`. Soft-deleted ones only with `with_deleted`.
    pub fn fetch(&self, collection: &str, id: &str, with_deleted: bool) -> Result<Option<Value>> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, data, created_at, updated_at, deleted_at FROM entities
                 WHERE collection = ?1 AND id = ?2",
                params![collection, id],
                row_to_entity,
            )
            .optional()?;
        Ok(row.filter(|e| with_deleted || e["deleted_at"].is_null()))
    }

    /// The entity; `not-found` if missing or soft-deleted.
    pub fn get(&self, collection: &str, id: &str) -> Result<Value> {
        self.fetch(collection, id, false)?
            .ok_or_else(|| not_found(collection, id))
    }

    /// Merges `data`'s top-level fields into the entity (atomically: a
    /// concurrent update from another process is not lost).
    pub fn update(&self, collection: &str, id: &str, data: Value) -> Result<Value> {
        let changes = fields(data, false)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT data FROM entities WHERE collection = ?1 AND id = ?2 AND deleted_at IS NULL",
                params![collection, id],
                |row| row.get(0),
            )
            .optional()?;
        let current = current.ok_or_else(|| not_found(collection, id))?;
        let mut map: Map<String, Value> = serde_json::from_str(&current).map_err(|e| {
            StoreError::step(
                FailureKind::Database,
                format!("stored entity is corrupt: {e}"),
            )
        })?;
        map.extend(changes);
        tx.execute(
            "UPDATE entities SET data = ?3, updated_at = ?4 WHERE collection = ?1 AND id = ?2",
            params![collection, id, Value::Object(map).to_string(), now()],
        )?;
        tx.commit()?;
        drop(conn);
        self.get(collection, id)
    }

    /// Removes the entity for good.
    pub fn delete(&self, collection: &str, id: &str) -> Result<()> {
        let deleted = self.conn().execute(
            "DELETE FROM entities WHERE collection = ?1 AND id = ?2",
            params![collection, id],
        )?;
        if deleted == 0 {
            return Err(not_found(collection, id));
        }
        Ok(())
    }

    /// Marks the entity deleted; returns it.
    pub fn soft_delete(&self, collection: &str, id: &str) -> Result<Value> {
        let changed = self.conn().execute(
            "UPDATE entities SET deleted_at = ?3, updated_at = ?3
             WHERE collection = ?1 AND id = ?2 AND deleted_at IS NULL",
            params![collection, id, now()],
        )?;
        if changed == 0 {
            return Err(not_found(collection, id));
        }
        self.fetch(collection, id, true)?
            .ok_or_else(|| not_found(collection, id))
    }

    /// Undoes a soft delete; returns the entity.
    pub fn restore(&self, collection: &str, id: &str) -> Result<Value> {
        let entity = self
            .fetch(collection, id, true)?
            .ok_or_else(|| not_found(collection, id))?;
        if entity["deleted_at"].is_null() {
            return Err(StoreError::permanent(
                FailureKind::UnexpectedState,
                format!("{collection} '{id}' is not deleted"),
            ));
        }
        self.conn().execute(
            "UPDATE entities SET deleted_at = NULL, updated_at = ?3 WHERE collection = ?1 AND id = ?2",
            params![collection, id, now()],
        )?;
        self.get(collection, id)
    }

    /// The entities that match, oldest first.
    pub fn list(&self, collection: &str, query: &Query) -> Result<Vec<Value>> {
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
                args.push(json_path(&filter.field)?.into());
            }
            args.push(filter.value.to_string().into());
        }
        let limit = query.limit.unwrap_or(LIST_CAP).min(LIST_CAP);
        sql.push_str(" ORDER BY rowid LIMIT ? OFFSET ?");
        args.push(i64::from(limit).into());
        args.push(i64::from(query.offset).into());
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(args), row_to_entity)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// How many entities a collection holds (soft-deleted included).
    pub fn count(&self, collection: &str) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM entities WHERE collection = ?1",
            params![collection],
            |row| row.get(0),
        )?)
    }
}

fn row_to_entity(row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let id: String = row.get(0)?;
    let data: String = row.get(1)?;
    let mut map: Map<String, Value> = serde_json::from_str(&data).unwrap_or_default();
    let mut entity = Map::with_capacity(map.len() + 4);
    entity.insert("id".into(), Value::String(id));
    entity.append(&mut map);
    entity.insert("created_at".into(), Value::String(row.get(2)?));
    entity.insert("updated_at".into(), Value::String(row.get(3)?));
    entity.insert(
        "deleted_at".into(),
        row.get::<_, Option<String>>(4)?
            .map(Value::String)
            .unwrap_or(Value::Null),
    );
    Ok(Value::Object(entity))
}

/// A guest's JSON, under the rules of every JSON that enters the host
/// (nesting, numbers): what is stored can always be read back into a report.
pub(super) fn parse(data: &str, what: &str) -> Result<Value> {
    let json = crate::json::Json::parse(data.to_string())
        .map_err(|e| invalid(format!("{what} is not JSON: {e}")))?;
    Ok(json.value().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(err: StoreError) -> FailureKind {
        err.kind
    }

    #[test]
    fn a_call_that_runs_again_gets_back_the_entities_it_created() {
        let store = EntityStore::in_memory().unwrap();
        let call = "run1:create-products:invoke";
        let first = store
            .create_once("product", json!({"title": "A"}), Some((call, 0)))
            .unwrap();
        let second = store
            .create_once("product", json!({"title": "B"}), Some((call, 1)))
            .unwrap();
        assert_ne!(first["id"], second["id"]);
        // The same call again (a retry, a re-invoke after a crash).
        let again = store
            .create_once("product", json!({"title": "A"}), Some((call, 0)))
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(store.count("product").unwrap(), 2);
        // Another run's call gets its own entity.
        let other = store
            .create_once(
                "product",
                json!({"title": "A"}),
                Some(("run2:create-products:invoke", 0)),
            )
            .unwrap();
        assert_ne!(other["id"], first["id"]);
        // Deleted for good (compensated): created anew.
        store
            .delete("product", first["id"].as_str().unwrap())
            .unwrap();
        let anew = store
            .create_once("product", json!({"title": "A"}), Some((call, 0)))
            .unwrap();
        assert_eq!(anew["id"], first["id"]);
        assert_eq!(store.count("product").unwrap(), 3);
        // An id the step chose stays a duplicate.
        store
            .create_once("product", json!({"id": "p1"}), Some((call, 5)))
            .unwrap();
        assert_eq!(
            kind(
                store
                    .create_once("product", json!({"id": "p1"}), Some((call, 5)))
                    .unwrap_err()
            ),
            FailureKind::Duplicate
        );
    }

    /// A step granted the same collection can compute the id a later step's
    /// create will derive (the hash's inputs are the run's call keys) and
    /// plant a row there first. That row is not taken for the later create's
    /// own: the create fails as a duplicate instead of returning planted data.
    #[test]
    fn a_row_planted_at_a_derived_id_is_not_taken_for_the_creates_own() {
        let store = EntityStore::in_memory().unwrap();
        let victim = "run1:charge:invoke";
        let planted_id = derived_id("payment", victim, 0);
        store
            .create_once(
                "payment",
                json!({"id": planted_id, "amount": 0, "status": "paid"}),
                Some(("run1:attacker:invoke", 0)),
            )
            .unwrap();
        let err = store
            .create_once("payment", json!({"amount": 100}), Some((victim, 0)))
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Duplicate);
        assert!(err.message.contains("not created by this call"), "{err}");
        assert_eq!(store.get("payment", &planted_id).unwrap()["amount"], 0);
    }

    #[test]
    fn create_get_update_soft_delete_restore_delete() {
        let store = EntityStore::in_memory().unwrap();
        let brand = store.create("brand", json!({"name": "Acme"})).unwrap();
        let id = brand["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("brand_"));
        assert_eq!(store.get("brand", &id).unwrap()["name"], "Acme");
        let updated = store
            .update("brand", &id, json!({"logo_url": "x"}))
            .unwrap();
        assert_eq!(
            (updated["name"].as_str(), updated["logo_url"].as_str()),
            (Some("Acme"), Some("x"))
        );
        store.soft_delete("brand", &id).unwrap();
        assert_eq!(
            kind(store.get("brand", &id).unwrap_err()),
            FailureKind::NotFound
        );
        assert_eq!(store.list("brand", &Query::default()).unwrap().len(), 0);
        store.restore("brand", &id).unwrap();
        assert_eq!(
            kind(store.restore("brand", &id).unwrap_err()),
            FailureKind::UnexpectedState
        );
        store.delete("brand", &id).unwrap();
        assert_eq!(
            kind(store.delete("brand", &id).unwrap_err()),
            FailureKind::NotFound
        );
    }

    #[test]
    fn ids_are_kept_and_duplicates_refused() {
        let store = EntityStore::in_memory().unwrap();
        store
            .create("brand", json!({"id": "b1", "name": "A"}))
            .unwrap();
        assert_eq!(
            kind(store.create("brand", json!({"id": "b1"})).unwrap_err()),
            FailureKind::Duplicate
        );
        assert_eq!(
            kind(
                store
                    .create("brand", json!({"created_at": "x"}))
                    .unwrap_err()
            ),
            FailureKind::InvalidData
        );
        assert_eq!(
            kind(store.create("brand", json!([1])).unwrap_err()),
            FailureKind::InvalidData
        );
    }

    #[test]
    fn list_filters_by_typed_equality_in_creation_order() {
        let store = EntityStore::in_memory().unwrap();
        for (title, brand, n) in [("a", "b1", 1), ("b", "b2", 2), ("c", "b1", 3)] {
            store
                .create(
                    "product",
                    json!({"title": title, "brand_id": brand, "n": n, "meta": {"k": n}}),
                )
                .unwrap();
        }
        let query = |filters: Vec<Filter>| Query {
            filters,
            ..Query::default()
        };
        let titles = |rows: Vec<Value>| {
            rows.iter()
                .map(|r| r["title"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let eq = |field: &str, value: Value| Filter {
            field: field.into(),
            value,
        };
        assert_eq!(
            titles(
                store
                    .list("product", &query(vec![eq("brand_id", json!("b1"))]))
                    .unwrap()
            ),
            ["a", "c"]
        );
        assert_eq!(
            titles(
                store
                    .list("product", &query(vec![eq("n", json!(2))]))
                    .unwrap()
            ),
            ["b"]
        );
        assert_eq!(
            titles(
                store
                    .list("product", &query(vec![eq("n", json!("2"))]))
                    .unwrap()
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            titles(
                store
                    .list("product", &query(vec![eq("meta.k", json!(3))]))
                    .unwrap()
            ),
            ["c"]
        );
        assert_eq!(
            titles(
                store
                    .list("product", &query(vec![eq("missing", json!(null))]))
                    .unwrap()
            )
            .len(),
            3
        );
        let paged = Query {
            limit: Some(1),
            offset: 1,
            ..Query::default()
        };
        assert_eq!(titles(store.list("product", &paged).unwrap()), ["b"]);
        assert_eq!(
            kind(
                store
                    .list("product", &query(vec![eq("x'; drop", json!(1))]))
                    .unwrap_err()
            ),
            FailureKind::InvalidArgument
        );
    }
}
