//! `entities`: collections of JSON objects the step resolves by name, in the
//! host's entity store ([`store`]: the SQLite state file, or PostgreSQL). Granted by
//! `entities = ["brand", ...]`; the store is its per-workflow state.

mod postgres;
mod sqlite;
mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use toml::Spanned;
use wasmtime::component::{Linker, Resource};

pub use store::{EntityStore, Filter, LIST_CAP, Query, StoreError};

use super::bindings::wasaga::step::entities::{self, Host, HostCollection, ListQuery};
use super::{CallCapabilities, Capabilities, CapabilityError, CapabilityView, ViewOf};
use crate::app::{Grant, GrantEntry, GrantParser, GrantProblems, NamesGrant};
use crate::saga::FailureKind;
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
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: ViewOf<T>,
) -> wasmtime::Result<()> {
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

/// The most entity writes (creates, updates, deletes, restores) one call
/// attempt may make.
pub const MAX_WRITES_PER_CALL: u32 = 1_000;

/// The largest entity (or update) one write may carry, as JSON text.
pub const MAX_ENTITY_BYTES: usize = 1 << 20;

/// The most entity data one call attempt may write in all.
pub const MAX_BYTES_PER_CALL: usize = 16 << 20;

impl CapabilityView<'_> {
    fn collection(&self, handle: &Resource<CollectionHandle>) -> Result<String> {
        Ok(self.table.get(handle)?.name.clone())
    }

    /// Counts one write of `bytes` of data against the call's budget (the
    /// state file is shared by every run: one call may not fill the disk).
    fn charge_write(&self, bytes: usize) -> Result<()> {
        let refuse = |message: String| {
            Err(CapabilityError::permanent(
                FailureKind::InvalidArgument,
                message,
            ))
        };
        if bytes > MAX_ENTITY_BYTES {
            return refuse(format!(
                "an entity write carries {bytes} bytes, more than the {} MiB one may",
                MAX_ENTITY_BYTES >> 20
            ));
        }
        let writes = self.call.entity_writes.fetch_add(1, Ordering::Relaxed);
        if writes >= MAX_WRITES_PER_CALL {
            return refuse(format!(
                "a call may make at most {MAX_WRITES_PER_CALL} entity writes"
            ));
        }
        let written = self.call.entity_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if written > MAX_BYTES_PER_CALL {
            return refuse(format!(
                "a call may write at most {} MiB of entity data",
                MAX_BYTES_PER_CALL >> 20
            ));
        }
        Ok(())
    }
}

impl HostCollection for CapabilityView<'_> {
    fn name(&mut self, handle: Resource<CollectionHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.name.clone())
    }

    async fn create(&mut self, handle: Resource<CollectionHandle>, data: String) -> Result<String> {
        let name = self.collection(&handle)?;
        self.charge_write(data.len())?;
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
            .create_once(&name, data, origin, self.call.fence.as_ref())
            .await?
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
        self.charge_write(data.len())?;
        let data = parse(&data, "the update")?;
        Ok(self
            .call
            .services
            .entities
            .update(&name, &id, data, self.call.fence.as_ref())?
            .to_string())
    }

    async fn delete(&mut self, handle: Resource<CollectionHandle>, id: String) -> Result<()> {
        let name = self.collection(&handle)?;
        self.charge_write(id.len())?;
        Ok(self
            .call
            .services
            .entities
            .delete(&name, &id, self.call.fence.as_ref())
            .await?)
    }

    async fn soft_delete(
        &mut self,
        handle: Resource<CollectionHandle>,
        id: String,
    ) -> Result<String> {
        let name = self.collection(&handle)?;
        self.charge_write(id.len())?;
        Ok(self
            .call
            .services
            .entities
            .soft_delete(&name, &id, self.call.fence.as_ref())
            .await?
            .to_string())
    }

    async fn restore(&mut self, handle: Resource<CollectionHandle>, id: String) -> Result<String> {
        let name = self.collection(&handle)?;
        self.charge_write(id.len())?;
        Ok(self
            .call
            .services
            .entities
            .restore(&name, &id, self.call.fence.as_ref())
            .await?
            .to_string())
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

    /// One call cannot fill the shared state file: its writes are counted
    /// (1,000), each is at most 1 MiB, and all of them at most 16 MiB.
    #[test]
    fn a_call_s_entity_writes_are_bounded() {
        fn create(view: &mut CapabilityView<'_>, data: String) -> Result<String> {
            let handle = view
                .table
                .push(CollectionHandle {
                    name: "brand".into(),
                })
                .unwrap();
            futures::executor::block_on(view.create(handle, data))
        }
        let counted = call_with(grants_of("entities = [\"brand\"]"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &counted,
            table: &mut table,
        };
        let mut written = 0;
        let err = loop {
            match create(&mut view, "{}".into()) {
                Ok(_) => written += 1,
                Err(e) => break format!("{e:?}"),
            }
        };
        assert!(err.contains("at most 1000 entity writes"), "{err}");
        assert_eq!(written, MAX_WRITES_PER_CALL);

        let sized = call_with(grants_of("entities = [\"brand\"]"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &sized,
            table: &mut table,
        };
        let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(MAX_ENTITY_BYTES));
        let err = format!("{:?}", create(&mut view, big).unwrap_err());
        assert!(err.contains("more than the 1 MiB"), "{err}");
        let half = format!("{{\"blob\":\"{}\"}}", "x".repeat(MAX_ENTITY_BYTES / 2));
        let mut written = 0;
        let err = loop {
            match create(&mut view, half.clone()) {
                Ok(_) => written += 1,
                Err(e) => break format!("{e:?}"),
            }
        };
        assert!(err.contains("at most 16 MiB"), "{err}");
        assert_eq!(written, 31);
    }

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
        let created: Value = serde_json::from_str(
            &futures::executor::block_on(view.create(handle, "{\"name\":\"Acme\"}".into()))
                .unwrap(),
        )
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
