//! The manifest loader, as `host check` runs it: bytes → text (or the
//! located UTF-8 error) → a plan or located errors, rendered by miette.
//! The file may nest itself under another name (`child.toml`), so nested
//! workflows are reached too. Grants are read by parsers built from the
//! core's own grant types (the host's live in the wasmtime crate).
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use wasaga_core::app::hosts::HostPattern;
use wasaga_core::app::{Grant, GrantEntry, GrantParser, GrantProblems, GrantRegistry};
use wasaga_core::manifest::{self, LoadOptions, Snapshot};

/// `entities`, `config`, `secrets`: lists of names (the last two declared).
struct Names(&'static str);

impl GrantParser for Names {
    fn key(&self) -> &'static str {
        self.0
    }

    fn parse(&self, entry: &GrantEntry<'_>, problems: &mut GrantProblems) -> Option<Arc<dyn Grant>> {
        let declared: Vec<&str> = match self.0 {
            "config" => entry.config_keys().to_vec(),
            "secrets" => entry.secrets().to_vec(),
            _ => {
                let names: Vec<String> = entry.deserialize(problems)?;
                let mut grant = wasaga_core::app::NamesGrant::new(self.0);
                names.into_iter().for_each(|n| grant.insert(n));
                return Some(Arc::new(grant));
            }
        };
        entry.declared_names(problems, self.0, &declared, |name| {
            (format!("'{name}' is not declared"), "declare it".into())
        })
    }
}

/// `events = true`.
struct Flag;

#[derive(Debug)]
struct On;

impl Grant for On {
    fn to_toml(&self) -> String {
        "events = true".into()
    }
}

impl GrantParser for Flag {
    fn key(&self) -> &'static str {
        "events"
    }

    fn parse(&self, entry: &GrantEntry<'_>, problems: &mut GrantProblems) -> Option<Arc<dyn Grant>> {
        let on: bool = entry.deserialize(problems)?;
        on.then(|| Arc::new(On) as Arc<dyn Grant>)
    }
}

/// `http = ["https://host", ...]`: every pattern parsed as the host does.
struct Http;

impl GrantParser for Http {
    fn key(&self) -> &'static str {
        "http"
    }

    fn parse(&self, entry: &GrantEntry<'_>, problems: &mut GrantProblems) -> Option<Arc<dyn Grant>> {
        let patterns: Vec<String> = entry.deserialize(problems)?;
        for pattern in &patterns {
            if let Err(e) = HostPattern::parse(pattern) {
                problems.error(entry.span(), e.message);
            }
        }
        Some(Arc::new(On))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = manifest::text_of(data.to_vec()) else {
        return;
    };
    let dir = PathBuf::from("/fuzz");
    let files = Snapshot::new([
        (dir.join("m.toml"), text.clone()),
        (dir.join("child.toml"), text),
    ]);
    let mut options = LoadOptions::new(GrantRegistry::new(vec![
        Arc::new(Names("entities")),
        Arc::new(Flag),
        Arc::new(Names("config")),
        Arc::new(Http),
        Arc::new(Names("secrets")),
    ]));
    options.require_components = false;
    options.files = Arc::new(files);
    if let Err(errors) = manifest::load(&dir.join("m.toml"), &options) {
        let _ = errors.render(false);
    }
});
