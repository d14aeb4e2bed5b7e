//! `config`: the manifest's `[config]` table, readable key by granted key.
//! Granted by `config = ["key", ...]`; each key must be set in `[config]`.
//! Its per-workflow state is the table (`Services::config`).

use std::collections::BTreeSet;
use std::sync::Arc;

use toml::Spanned;
use wasmtime::component::{Linker, Resource};

use super::bindings::wasaga::step::config::{self, Host, HostSettings};
use super::{Capabilities, CapabilityError, CapabilityView, ViewOf};
use crate::app::grants::toml_list;
use crate::app::{Grant, GrantEntry, GrantParser, GrantProblems, did_you_mean};

/// The key of its grant, and the name it is resolved by.
pub const KEY: &str = "config";

/// `config = ["key", ...]`: the `[config]` keys a step may read.
#[derive(Debug, Clone, Default)]
pub struct ConfigGrant {
    /// The keys.
    pub keys: BTreeSet<String>,
}

impl Grant for ConfigGrant {
    fn to_toml(&self) -> String {
        format!("config = {}", toml_list(&self.keys))
    }
}

/// Reads `config = [...]`, checking each key against `[config]`.
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
        let keys: Vec<Spanned<String>> = entry.deserialize(problems)?;
        let mut grant = ConfigGrant::default();
        for key in keys {
            let name = key.get_ref();
            if !entry.config_keys().contains(&name.as_str()) {
                let hint = did_you_mean(name, entry.config_keys().iter().copied())
                    .map(|k| format!("did you mean '{k}'? "))
                    .unwrap_or_default();
                problems
                    .error(
                        entry.locate(key.span()),
                        format!("the config key '{name}' is not set in [config]"),
                    )
                    .help(format!(
                        "{hint}add it to the manifest:\n[config]\n{name} = \"...\""
                    ));
            }
            grant.keys.insert(name.clone());
        }
        (!grant.keys.is_empty()).then(|| Arc::new(grant) as Arc<dyn Grant>)
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
        let grants = &self.call.grants;
        let granted = grants.get::<ConfigGrant>(KEY);
        if !granted.is_some_and(|g| g.keys.contains(&key)) {
            let mut wanted = granted.cloned().unwrap_or_default();
            wanted.keys.insert(key.clone());
            let what = format!("the config key '{key}'");
            return Err(CapabilityError::not_allowed(grants.denial(
                KEY,
                Arc::new(wanted),
                &what,
            )));
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
