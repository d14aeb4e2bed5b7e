//! `entities`: collections of JSON objects the step resolves by name, in the
//! host's entity store ([`store`], a real SQLite file). Granted by
//! `entities = ["brand", ...]`; the store is its per-workflow state.

mod store;

use std::sync::Arc;

use serde_json::Value;
use toml::Spanned;
use wasmtime::component::{Linker, Resource};

pub use store::{EntityStore, Filter, LIST_CAP, Query, StoreError};

use super::bindings::wasaga::step::entities::{self, Host, HostCollection, ListQuery};
use super::{CallCapabilities, Capabilities, CapabilityError, CapabilityView, ViewOf};
use crate::app::{Grant, GrantEntry, GrantParser, GrantProblems, NamesGrant};
use store::parse;

/// The key of its grant.
pub const KEY: &str = "entities";

/// Reads `entities = [...]` (a [`NamesGrant`]): names that follow the naming rule and are not
/// names the container resolves to another capability.
pub struct EntitiesGrantParser;

impl GrantParser for EntitiesGrantParser {
    fn key(&self) -> &'static str {
        KEY
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        let names: Vec<Spanned<String>> = entry.deserialize(problems)?;
        let mut grant = NamesGrant::new(KEY);
        for name in names {
            let (span, text) = (entry.locate(name.span()), name.get_ref());
            if super::container::RESERVED.contains(&text.as_str()) {
                problems
                    .error(span, format!("'{text}' is reserved for the {text} capability"))
                    .help(format!(
                        "grant it with `{text} = ...` in `grants`, and name the collection otherwise"
                    ));
            } else if problems.check_name(span, text, "an entities collection") {
                grant.insert(text.clone());
            }
        }
        grant.into_grant()
    }
}

/// Whether the call may reach `collection`; the `not-allowed` error naming
/// the grant if not.
pub fn check(call: &CallCapabilities, collection: &str) -> Result<()> {
    call.grants
        .require_name(
            KEY,
            collection,
            &format!("the entities collection '{collection}'"),
        )
        .map_err(CapabilityError::not_allowed)
}

/// Links `entities`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    entities::add_to_linker::<T, Capabilities>(linker, view)
}

/// The handle behind the WIT `collection` resource: a granted collection name.
pub struct CollectionHandle {
    /// The collection's name.
    pub name: String,
}

impl From<StoreError> for CapabilityError {
    fn from(err: StoreError) -> CapabilityError {
        CapabilityError::Step {
            kind: err.kind,
            message: err.message,
            permanent: err.permanent,
        }
    }
}

type Result<T> = std::result::Result<T, CapabilityError>;

impl Host for CapabilityView<'_> {}

impl CapabilityView<'_> {
    fn collection(&self, handle: &Resource<CollectionHandle>) -> Result<String> {
        Ok(self.table.get(handle)?.name.clone())
    }
}

impl HostCollection for CapabilityView<'_> {
    fn name(&mut self, handle: Resource<CollectionHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.name.clone())
    }

    fn create(&mut self, handle: Resource<CollectionHandle>, data: String) -> Result<String> {
        let name = self.collection(&handle)?;
        let data = parse(&data, "the new entity")?;
        let ordinal = self
            .call
            .created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let origin = self.call.origin.as_deref().map(|call| (call, ordinal));
        Ok(self
            .call
            .services
            .entities
            .create_once(&name, data, origin)?
            .to_string())
    }

    fn get(&mut self, handle: Resource<CollectionHandle>, id: String) -> Result<String> {
        let name = self.collection(&handle)?;
        Ok(self.call.services.entities.get(&name, &id)?.to_string())
    }

    fn update(
        &mut self,
        handle: Resource<CollectionHandle>,
        id: String,
        data: String,
    ) -> Result<String> {
        let name = self.collection(&handle)?;
        let data = parse(&data, "the update")?;
        Ok(self
            .call
            .services
            .entities
            .update(&name, &id, data)?
            .to_string())
    }

    fn delete(&mut self, handle: Resource<CollectionHandle>, id: String) -> Result<()> {
        let name = self.collection(&handle)?;
        Ok(self.call.services.entities.delete(&name, &id)?)
    }

    fn soft_delete(&mut self, handle: Resource<CollectionHandle>, id: String) -> Result<String> {
        let name = self.collection(&handle)?;
        Ok(self
            .call
            .services
            .entities
            .soft_delete(&name, &id)?
            .to_string())
    }

    fn restore(&mut self, handle: Resource<CollectionHandle>, id: String) -> Result<String> {
        let name = self.collection(&handle)?;
        Ok(self.call.services.entities.restore(&name, &id)?.to_string())
    }

    fn list(
        &mut self,
        handle: Resource<CollectionHandle>,
        query: ListQuery,
    ) -> Result<Vec<String>> {
        let name = self.collection(&handle)?;
        let filters = query
            .filters
            .into_iter()
            .map(|f| {
                Ok(Filter {
                    value: parse(&f.value, "a filter value")?,
                    field: f.field,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let query = Query {
            filters,
            with_deleted: query.with_deleted,
            limit: query.limit,
            offset: query.offset,
        };
        let rows = self.call.services.entities.list(&name, &query)?;
        Ok(rows.iter().map(Value::to_string).collect())
    }

    fn drop(&mut self, handle: Resource<CollectionHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{call_with, grants_of, load_errors};
    use crate::saga::FailureKind;
    use wasmtime::component::ResourceTable;

    #[test]
    fn a_granted_collection_is_reached_through_its_handle() {
        let call = call_with(grants_of("entities = [\"brand\"]"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &call,
            table: &mut table,
        };
        check(view.call, "brand").unwrap();
        let handle = view
            .table
            .push(CollectionHandle {
                name: "brand".into(),
            })
            .unwrap();
        let created: Value =
            serde_json::from_str(&view.create(handle, "{\"name\":\"Acme\"}".into()).unwrap())
                .unwrap();
        assert_eq!(created["name"], "Acme");
        let id = created["id"].as_str().unwrap().to_string();
        let handle = view
            .table
            .push(CollectionHandle {
                name: "brand".into(),
            })
            .unwrap();
        let fetched: Value = serde_json::from_str(&view.get(handle, id).unwrap()).unwrap();
        assert_eq!(fetched, created);
    }

    /// What `capabilities::grants` tested before each capability read its own grant.
    #[test]
    fn the_denial_shows_the_line_that_would_grant_it() {
        let call = call_with(grants_of("entities = [\"brand\"]"));
        let Err(CapabilityError::Step {
            kind,
            message,
            permanent,
        }) = check(&call, "product")
        else {
            panic!("a denial is a step error")
        };
        assert_eq!(kind, FailureKind::NotAllowed);
        assert!(permanent);
        assert_eq!(
            message,
            "step 'a' is not granted the entities collection 'product'; to grant it, \
             write in main.toml under [steps.a] (line 7): \
             grants = { entities = [\"brand\", \"product\"] }"
        );
    }

    #[test]
    fn a_collection_cannot_take_another_capability_s_name_or_break_the_naming_rule() {
        let rendered = load_errors("entities = [\"events\", \"9lives\"]");
        assert!(
            rendered.contains("'events' is reserved for the events capability"),
            "{rendered}"
        );
        assert!(
            rendered.contains("'9lives' is not a valid name for an entities collection"),
            "{rendered}"
        );
    }
}
