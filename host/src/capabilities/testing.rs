//! Test helpers: a step's grants as the real loader reads them, and a call
//! that holds them (an in-memory entity store, a `[config]` table).

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use indexmap::IndexMap;

use super::{CallCapabilities, EntityStore, Services, registry};
use crate::app::{ConfigValues, Grants};
use crate::json::Json;

/// A manifest whose step `a` has `grants = { GRANTS }` on line 7.
fn manifest(grants: &str) -> String {
    format!(
        "[workflow]\nname = \"w\"\n[config]\ngreeting = \"hello\"\n[steps.a]\ncomponent = \"a.wasm\"\ngrants = {{ {grants} }}\n[[flow]]\nrun = \"a\"\n[secrets.pay-key]\nhosts = [\"https://api.pay.example\"]\n"
    )
}

fn load(grants: &str) -> Result<crate::app::App, crate::manifest::ManifestErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.toml");
    std::fs::write(&path, manifest(grants)).unwrap();
    let mut options = registry::load_options();
    options.require_components = false;
    crate::manifest::load(&path, &options).map(|mut app| {
        // The file is in a temporary folder: name it as a user would see it.
        for spec in &mut app.components {
            spec.grants.place.file = "main.toml".into();
        }
        app
    })
}

/// The grants of a step written `grants = { GRANTS }`, read by the registry's parsers.
pub fn grants_of(grants: &str) -> Grants {
    let app = load(grants).unwrap_or_else(|e| panic!("{}", e.render(false)));
    app.components[0].grants.clone()
}

/// The rendered errors of a step written `grants = { GRANTS }`.
pub fn load_errors(grants: &str) -> String {
    load(grants)
        .expect_err("the grants are invalid")
        .render(false)
}

/// A call of step `a` with these grants.
pub fn call_with(grants: Grants) -> CallCapabilities {
    let mut config = IndexMap::new();
    config.insert("greeting".to_string(), Json::parse("\"hello\"").unwrap());
    CallCapabilities {
        services: Services {
            entities: Arc::new(EntityStore::in_memory().unwrap()),
            config: Arc::new(ConfigValues::new(config)),
            secrets: Arc::new(secret_values()),
            http: Arc::new(super::OutboundClient::new(Default::default())),
        },
        grants: Arc::new(grants),
        node: "a".into(),
        run_id: "run-1".into(),
        events: Arc::default(),
        origin: None,
        created: AtomicU32::new(0),
        emitted: AtomicU32::new(0),
        entity_writes: Default::default(),
        entity_bytes: Default::default(),
        logged: Default::default(),
        outbound: Arc::new(super::OutboundCall::new(
            "w:run-1:a:invoke".into(),
            None,
            Arc::default(),
        )),
        fence: None,
    }
}

/// `pay-key` with the value `sk_test_value`, as a secrets file gives it.
fn secret_values() -> super::SecretValues {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, "pay-key = \"sk_test_value\"\n").unwrap();
    let app = load("").unwrap();
    super::SecretSource::file(&path)
        .unwrap()
        .resolve(&app.secrets)
        .unwrap()
}
