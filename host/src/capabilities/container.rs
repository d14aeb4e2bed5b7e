//! `container.resolve(name)`: hands out a granted capability as a resource
//! handle. It owns the names the container resolves (`events`, `config`, and
//! otherwise an entities collection) and asks each capability for its grant.
//! It has no grant of its own.

use wasmtime::component::{Linker, Resource};

use super::bindings::wasaga::step::container::{self, Capability, Host};
use super::config::SettingsHandle;
use super::entities::{self, CollectionHandle};
use super::events::{self, EmitterHandle};
use super::{Capabilities, CapabilityError, CapabilityView, ViewOf};

/// Names the container resolves to something other than a collection.
pub const RESERVED: [&str; 2] = [events::KEY, super::config::KEY];

/// Links `container`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    container::add_to_linker::<T, Capabilities>(linker, view)
}

impl Host for CapabilityView<'_> {
    fn resolve(&mut self, name: String) -> Result<Capability, CapabilityError> {
        match name.as_str() {
            events::KEY => {
                events::check(self.call)?;
                Ok(Capability::Events(self.table.push(EmitterHandle)?))
            }
            super::config::KEY => Ok(Capability::Config(self.table.push(SettingsHandle)?)),
            collection => {
                entities::check(self.call, collection)?;
                let handle: Resource<CollectionHandle> = self.table.push(CollectionHandle {
                    name: collection.to_string(),
                })?;
                Ok(Capability::Entities(handle))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{call_with, grants_of};
    use crate::saga::FailureKind;
    use wasmtime::component::ResourceTable;

    fn resolve_in(grants: &str, name: &str) -> Result<Capability, CapabilityError> {
        let call = call_with(grants_of(grants));
        let mut table = ResourceTable::new();
        CapabilityView {
            call: &call,
            table: &mut table,
        }
        .resolve(name.into())
    }

    #[test]
    fn granted_names_resolve_to_their_capabilities() {
        let grants = "entities = [\"brand\"], events = true";
        assert!(matches!(
            resolve_in(grants, "brand"),
            Ok(Capability::Entities(_))
        ));
        assert!(matches!(
            resolve_in(grants, "events"),
            Ok(Capability::Events(_))
        ));
        // `config` always resolves; each key is checked when read.
        assert!(matches!(
            resolve_in(grants, "config"),
            Ok(Capability::Config(_))
        ));
    }

    #[test]
    fn an_ungranted_name_is_not_allowed_and_permanent() {
        for name in ["product", "events"] {
            let Err(CapabilityError::Step {
                kind, permanent, ..
            }) = resolve_in("entities = [\"brand\"]", name)
            else {
                panic!("{name} is not granted")
            };
            assert_eq!(kind, FailureKind::NotAllowed);
            assert!(permanent);
        }
    }
}
