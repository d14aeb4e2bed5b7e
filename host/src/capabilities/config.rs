//! `config`: the manifest's `[config]` table, readable key by granted key.
//! Granted by `config = ["key", ...]`; each key must be set in `[config]`.
//! Its per-workflow state is the table (`Services::config`).

use std::sync::Arc;

use wasmtime::component::{Linker, Resource};

use super::bindings::wasaga::step::config::{self, Host, HostSettings};
use super::{Capabilities, CapabilityError, CapabilityView, ViewOf};
use crate::app::{Grant, GrantEntry, GrantParser, GrantProblems};

/// The key of its grant, and the name it is resolved by.
pub const KEY: &str = "config";

/// Reads `config = [...]` (a [`crate::app::NamesGrant`]), checking each key against `[config]`.
pub struct ConfigGrantParser;

impl GrantParser for ConfigGrantParser {
    fn key(&self) -> &'static str {
        KEY
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        entry.declared_names(problems, KEY, entry.config_keys(), |name| {
            (
                format!("the config key '{name}' is not set in [config]"),
                format!("add it to the manifest:\n[config]\n{name} = \"...\""),
            )
        })
    }
}

/// Links `config`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    config::add_to_linker::<T, Capabilities>(linker, view)
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
        self.call
            .grants
            .require_name(KEY, &key, &format!("the config key '{key}'"))
            .map_err(CapabilityError::not_allowed)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{call_with, grants_of, load_errors};
    use crate::saga::FailureKind;
    use wasmtime::component::ResourceTable;

    #[test]
    fn a_granted_key_is_read_and_another_is_denied_with_the_line_to_write() {
        let call = call_with(grants_of("config = [\"greeting\"]"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &call,
            table: &mut table,
        };
        let handle = view.table.push(SettingsHandle).unwrap();
        assert_eq!(
            view.get(handle, "greeting".into()).unwrap().as_deref(),
            Some("\"hello\"")
        );
        let handle = view.table.push(SettingsHandle).unwrap();
        let Err(CapabilityError::Step { kind, message, .. }) = view.get(handle, "secret".into())
        else {
            panic!("denied")
        };
        assert_eq!(kind, FailureKind::NotAllowed);
        assert!(
            message.ends_with("grants = { config = [\"greeting\", \"secret\"] }"),
            "{message}"
        );
    }

    /// The config-grant problem of the core's `bad_options_say_what_is_expected`.
    #[test]
    fn a_granted_key_must_be_set_in_config() {
        let rendered = load_errors("config = [\"greting\"]");
        assert!(rendered.contains("is not set in [config]"), "{rendered}");
        assert!(rendered.contains("did you mean 'greeting'?"), "{rendered}");
    }
}
