//! Typed access to a granted entities collection.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::__private::bindings::wasaga::step::entities::{Collection, Filter, ListQuery};
use crate::StepError;

/// A granted entities collection: JSON objects with host-managed `id`,
/// `created_at`, `updated_at` and `deleted_at` fields.
pub struct Entities {
    collection: Collection,
}

impl Entities {
    pub(crate) fn new(collection: Collection) -> Entities {
        Entities { collection }
    }

    /// The collection's name.
    pub fn name(&self) -> String {
        self.collection.name()
    }

    /// Stores a new entity and returns it with its id and timestamps.
    pub fn create<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        data: &T,
    ) -> Result<R, StepError> {
        decode(self.collection.create(&encode(data)?))
    }

    /// The entity with this id (`not-found` if missing or soft-deleted).
    pub fn get<R: DeserializeOwned>(&self, id: &str) -> Result<R, StepError> {
        decode(self.collection.get(id))
    }

    /// Merges `data`'s top-level fields into the entity; returns the result.
    pub fn update<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        id: &str,
        data: &T,
    ) -> Result<R, StepError> {
        decode(self.collection.update(id, &encode(data)?))
    }

    /// Removes the entity for good.
    pub fn delete(&self, id: &str) -> Result<(), StepError> {
        self.collection.delete(id).map_err(StepError::from_wit)
    }

    /// Marks the entity deleted; returns it.
    pub fn soft_delete<R: DeserializeOwned>(&self, id: &str) -> Result<R, StepError> {
        decode(self.collection.soft_delete(id))
    }

    /// Undoes a soft delete; returns the entity.
    pub fn restore<R: DeserializeOwned>(&self, id: &str) -> Result<R, StepError> {
        decode(self.collection.restore(id))
    }

    /// The entities that match `query`, oldest first.
    pub fn list<R: DeserializeOwned>(&self, query: &Query) -> Result<Vec<R>, StepError> {
        let wit_query = ListQuery {
            filters: query
                .filters
                .iter()
                .map(|(field, value)| Filter {
                    field: field.clone(),
                    value: value.to_string(),
                })
                .collect(),
            with_deleted: query.with_deleted,
            limit: query.limit,
            offset: query.offset,
        };
        let rows = self
            .collection
            .list(&wit_query)
            .map_err(StepError::from_wit)?;
        rows.iter()
            .map(|row| serde_json::from_str(row).map_err(StepError::from))
            .collect()
    }
}

/// Which entities [`Entities::list`] returns: equality filters, soft-deleted
/// or not, and a page.
///
/// ```
/// let query = wasaga_sdk::Query::new().eq("brand_id", "brand_1").limit(10);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Query {
    filters: Vec<(String, Value)>,
    with_deleted: bool,
    limit: Option<u32>,
    offset: u32,
}

impl Query {
    /// All entities (up to the host's cap of 1000).
    pub fn new() -> Query {
        Query::default()
    }

    /// Only entities whose `field` (a name or dotted path) equals `value`.
    pub fn eq(mut self, field: &str, value: impl Serialize) -> Query {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.filters.push((field.to_string(), value));
        self
    }

    /// Include soft-deleted entities.
    pub fn with_deleted(mut self) -> Query {
        self.with_deleted = true;
        self
    }

    /// At most `n` entities.
    pub fn limit(mut self, n: u32) -> Query {
        self.limit = Some(n);
        self
    }

    /// Skip the first `n` entities.
    pub fn offset(mut self, n: u32) -> Query {
        self.offset = n;
        self
    }
}

fn encode<T: Serialize + ?Sized>(data: &T) -> Result<String, StepError> {
    serde_json::to_string(data).map_err(|e| StepError::invalid_data(e.to_string()).permanent())
}

fn decode<R: DeserializeOwned>(
    result: Result<String, crate::__private::WitError>,
) -> Result<R, StepError> {
    let text = result.map_err(StepError::from_wit)?;
    serde_json::from_str(&text).map_err(StepError::from)
}
