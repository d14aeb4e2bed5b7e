//! `container.resolve(name)`: hands out a granted capability as a resource handle.

use wasmtime::component::Resource;

use super::config::SettingsHandle;
use super::entities::CollectionHandle;
use super::events::EmitterHandle;
use super::grants::Denied;
use super::{CapabilityError, CapabilityView};
use crate::wit::wasaga::step::container::{Capability, Host};

impl Host for CapabilityView<'_> {
    fn resolve(&mut self, name: String) -> Result<Capability, CapabilityError> {
        let grants = &self.call.grants;
        match name.as_str() {
            "events" if grants.events => Ok(Capability::Events(self.table.push(EmitterHandle)?)),
            "events" => Err(grants.deny(Denied::Events)),
            "config" => Ok(Capability::Config(self.table.push(SettingsHandle)?)),
            collection if grants.entities.contains(collection) => {
                let handle: Resource<CollectionHandle> = self.table.push(CollectionHandle {
                    name: collection.to_string(),
                })?;
                Ok(Capability::Entities(handle))
            }
            collection => Err(grants.deny(Denied::Entities(collection))),
        }
    }
}
