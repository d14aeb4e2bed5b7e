//! `secrets`: values a step may send over HTTP without ever holding them.
//! Granted by `secrets = ["name", ...]`, each declared in `[secrets.NAME]`
//! with the hosts it may go to. Its per-workflow state is the values
//! ([`SecretValues`], read from the host's environment or a secrets file);
//! its per-call state is the placeholders handed out ([`Placeholders`]),
//! which the HTTP capability swaps for the values on requests to the
//! secret's hosts. It may not send anything itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use wasmtime::component::Linker;

use super::bindings::wasaga::step::secrets::{self, Host};
use super::{Capabilities, CapabilityError, CapabilityView, ViewOf};
use crate::app::hosts::HostPattern;
use crate::app::{
    Grant, GrantEntry, GrantParser, GrantProblems, NamesGrant, SecretSpec, secret_env_var,
};

/// The key of its grant.
pub const KEY: &str = "secrets";

/// Reads `secrets = [...]` (a [`NamesGrant`]), checking each name against `[secrets]`.
pub struct SecretsGrantParser;

impl GrantParser for SecretsGrantParser {
    fn key(&self) -> &'static str {
        KEY
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        entry.declared_names(problems, KEY, entry.secrets(), |name| {
            (
                format!("the secret '{name}' is not declared"),
                format!(
                    "declare it with the hosts it may be sent to:\n[secrets.{name}]\nhosts = [\"https://api.example.com\"]"
                ),
            )
        })
    }
}

/// One secret's value and where it may go. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret {
    value: Arc<str>,
    hosts: Arc<[HostPattern]>,
}

impl Secret {
    /// The value (for the HTTP capability to put into a request).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The destinations it may be sent to.
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("value", &"(hidden)")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// The values of a workflow's secrets, by name.
#[derive(Debug, Clone, Default)]
pub struct SecretValues {
    values: HashMap<String, Secret>,
}

/// Where secret values come from besides the environment: a secrets file.
#[derive(Clone, Default)]
pub struct SecretSource {
    file: Option<(PathBuf, HashMap<String, String>)>,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("file", &self.file.as_ref().map(|(p, _)| p))
            .finish()
    }
}

impl SecretSource {
    /// Values from the environment only.
    pub fn environment() -> SecretSource {
        SecretSource::default()
    }

    /// Values from the TOML file at `path` (`name = "value"` lines), and the
    /// environment, which wins.
    pub fn file(path: &Path) -> Result<SecretSource, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the secrets file {}: {e}", path.display()))?;
        // Not the parser's message: it quotes the line, which holds a value.
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].lines().count().max(1))
                .unwrap_or(1);
            format!(
                "the secrets file {} is not TOML at line {line}: write one `name = \"value\"` per line",
                path.display()
            )
        })?;
        let mut values = HashMap::new();
        for (name, value) in table {
            let toml::Value::String(value) = value else {
                return Err(format!(
                    "the secret '{name}' in {} is not a string: write {name} = \"...\"",
                    path.display()
                ));
            };
            values.insert(name, value);
        }
        Ok(SecretSource {
            file: Some((path.to_path_buf(), values)),
        })
    }

    /// The values of every declared secret; an error naming each missing one
    /// and where to set it (before any step runs).
    pub fn resolve(&self, declared: &IndexMap<String, SecretSpec>) -> Result<SecretValues, String> {
        let mut values = HashMap::new();
        let mut missing = Vec::new();
        for (name, spec) in declared {
            let variable = secret_env_var(name);
            let value = std::env::var(&variable).ok().or_else(|| {
                self.file
                    .as_ref()
                    .and_then(|(_, file)| file.get(name).cloned())
            });
            match value {
                Some(value) if !value.is_empty() => {
                    values.insert(
                        name.clone(),
                        Secret {
                            value: value.into(),
                            hosts: spec.hosts.clone().into(),
                        },
                    );
                }
                _ => missing.push(format!(
                    "  the secret '{name}' (declared at {}): set {variable}{}",
                    spec.declared_at,
                    match &self.file {
                        Some((path, _)) =>
                            format!(" or add {name} = \"...\" to {}", path.display()),
                        None => " or pass --secrets FILE".to_string(),
                    }
                )),
            }
        }
        if missing.is_empty() {
            Ok(SecretValues { values })
        } else {
            Err(format!(
                "{} secret{} no value on this host:\n{}",
                missing.len(),
                if missing.len() == 1 { " has" } else { "s have" },
                missing.join("\n")
            ))
        }
    }
}

impl SecretValues {
    /// The secret named `name`.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }

    /// Every value, for scrubbing text that might echo one back.
    pub fn values(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.values.iter().map(|(n, s)| (n.as_str(), s))
    }
}

impl SecretValues {
    /// `text` with the value of each of `granted` replaced by
    /// `[secret NAME]`: a guest never holds a value, but a server may echo
    /// one back (an error page quoting the request), and what a guest logs
    /// or returns goes to the log and the journal.
    pub fn scrub<'a>(&self, granted: Option<&NamesGrant>, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for name in granted.into_iter().flat_map(|g| g.names()) {
            if let Some(secret) = self.values.get(name)
                && !secret.value.is_empty()
                && text.contains(&*secret.value)
            {
                text = Cow::Owned(text.replace(&*secret.value, &format!("[secret {name}]")));
            }
        }
        text
    }
}

/// The placeholders one call has been handed, and the secret each stands for.
#[derive(Debug, Default)]
pub struct Placeholders {
    /// (secret name, placeholder, secret), in the order handed out.
    issued: Mutex<Vec<(String, String, Secret)>>,
}

impl Placeholders {
    /// The placeholder of `name` in this call: the same on every ask, fresh
    /// (random) for every call, so a placeholder leaked in one call is
    /// worthless in the next.
    fn issue(&self, name: &str, secret: &Secret) -> String {
        let mut issued = self.issued.lock().expect("placeholders");
        // By name, not by the placeholder's prefix: `pay` is not `pay-key`.
        if let Some((_, placeholder, _)) = issued.iter().find(|(n, _, _)| n == name) {
            return placeholder.clone();
        }
        let placeholder = format!("wasaga-secret-{name}-{}", uuid::Uuid::new_v4().simple());
        issued.push((name.to_string(), placeholder.clone(), secret.clone()));
        placeholder
    }

    /// Each placeholder handed out in this call with its secret.
    pub fn issued(&self) -> Vec<(String, Secret)> {
        self.issued
            .lock()
            .expect("placeholders")
            .iter()
            .map(|(_, placeholder, secret)| (placeholder.clone(), secret.clone()))
            .collect()
    }
}

/// Links `secrets`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    secrets::add_to_linker::<T, Capabilities>(linker, view)
}

impl Host for CapabilityView<'_> {
    fn placeholder(&mut self, name: String) -> Result<String, CapabilityError> {
        self.call
            .grants
            .require_name(KEY, &name, &format!("the secret '{name}'"))
            .map_err(CapabilityError::not_allowed)?;
        let Some(secret) = self.call.services.secrets.get(&name) else {
            // Values are resolved at start for every declared secret.
            return Err(CapabilityError::not_allowed(format!(
                "the secret '{name}' has no value on this host"
            )));
        };
        Ok(self.call.outbound.placeholders.issue(&name, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{call_with, grants_of, load_errors};
    use crate::saga::FailureKind;
    use wasmtime::component::ResourceTable;

    #[test]
    fn a_granted_secret_gives_one_fresh_placeholder_per_call() {
        let first = call_with(grants_of("secrets = [\"pay-key\"]"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &first,
            table: &mut table,
        };
        let a = view.placeholder("pay-key".into()).unwrap();
        let b = view.placeholder("pay-key".into()).unwrap();
        assert_eq!(a, b, "one placeholder per secret within a call");
        assert!(a.starts_with("wasaga-secret-pay-key-"), "{a}");
        assert!(!a.contains("sk_test"), "the placeholder is not the value");
        let second = call_with(grants_of("secrets = [\"pay-key\"]"));
        let mut view = CapabilityView {
            call: &second,
            table: &mut table,
        };
        assert_ne!(view.placeholder("pay-key".into()).unwrap(), a);
    }

    #[test]
    fn a_granted_secret_echoed_back_is_scrubbed_from_what_the_step_says() {
        let call = call_with(grants_of("secrets = [\"pay-key\"]"));
        assert_eq!(
            call.scrub("the server said: Bearer sk_test_value"),
            "the server said: Bearer [secret pay-key]"
        );
        let ungranted = call_with(grants_of("config = [\"greeting\"]"));
        assert!(matches!(
            ungranted.scrub("sk_test_value"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_placeholder_is_found_by_its_secret_name_not_its_prefix() {
        let placeholders = Placeholders::default();
        let secret = |value: &str| Secret {
            value: value.into(),
            hosts: Vec::new().into(),
        };
        let long = placeholders.issue("pay-key", &secret("long"));
        let short = placeholders.issue("pay", &secret("short"));
        assert_ne!(long, short);
        assert_eq!(placeholders.issue("pay", &secret("short")), short);
    }

    #[test]
    fn an_ungranted_secret_is_denied_with_the_line_to_write() {
        let call = call_with(grants_of("config = [\"greeting\"]"));
        let mut table = ResourceTable::new();
        let mut view = CapabilityView {
            call: &call,
            table: &mut table,
        };
        let Err(CapabilityError::Step { kind, message, .. }) = view.placeholder("pay-key".into())
        else {
            panic!("denied")
        };
        assert_eq!(kind, FailureKind::NotAllowed);
        assert!(
            message.ends_with("grants = { config = [\"greeting\"], secrets = [\"pay-key\"] }"),
            "{message}"
        );
    }

    #[test]
    fn a_granted_secret_must_be_declared() {
        let rendered = load_errors("secrets = [\"pay-kye\"]");
        assert!(
            rendered.contains("the secret 'pay-kye' is not declared"),
            "{rendered}"
        );
        assert!(rendered.contains("did you mean 'pay-key'?"), "{rendered}");
    }

    #[test]
    fn a_missing_value_is_an_error_naming_where_to_set_it() {
        let mut declared = IndexMap::new();
        declared.insert(
            "nowhere-key".to_string(),
            SecretSpec {
                hosts: vec![HostPattern::parse("https://x.example").unwrap()],
                declared_at: "main.toml:3".into(),
            },
        );
        let error = SecretSource::environment().resolve(&declared).unwrap_err();
        assert!(error.contains("WASAGA_SECRET_NOWHERE_KEY"), "{error}");
        assert!(error.contains("main.toml:3"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "nowhere-key = \"s3cr3t\"\n").unwrap();
        let values = SecretSource::file(&path)
            .unwrap()
            .resolve(&declared)
            .unwrap();
        assert_eq!(values.get("nowhere-key").unwrap().value(), "s3cr3t");
        assert!(!format!("{values:?}").contains("s3cr3t"));
        std::fs::write(&path, "nowhere-key = s3cr3t\n").unwrap();
        let error = SecretSource::file(&path).unwrap_err();
        assert!(!error.contains("s3cr3t"), "{error}");
    }
}
