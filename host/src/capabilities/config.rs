//! `config`: the manifest's `[config]` table, readable key by granted key.

use indexmap::IndexMap;
use wasmtime::component::Resource;

use super::grants::Denied;
use super::{CapabilityError, CapabilityView};
use crate::json::Json;
use crate::wit::wasaga::step::config::{Host, HostSettings};

/// The `[config]` table of a manifest.
#[derive(Debug, Default, Clone)]
pub struct ConfigValues {
    values: IndexMap<String, Json>,
}

impl ConfigValues {
    /// The table from its entries.
    pub fn new(values: IndexMap<String, Json>) -> ConfigValues {
        ConfigValues { values }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.values.get(key)
    }
}

/// The handle behind the WIT `settings` resource.
pub struct SettingsHandle;

impl Host for CapabilityView<'_> {}

impl HostSettings for CapabilityView<'_> {
    fn get(
        &mut self,
        handle: Resource<SettingsHandle>,
        key: String,
    ) -> Result<Option<String>, CapabilityError> {
        self.table.get(&handle)?;
        if !self.call.grants.config.contains(&key) {
            return Err(self.call.grants.deny(Denied::Config(&key)));
        }
        Ok(self
            .call
            .services
            .config
            .get(&key)
            .map(|v| v.text().to_string()))
    }

    fn drop(&mut self, handle: Resource<SettingsHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
