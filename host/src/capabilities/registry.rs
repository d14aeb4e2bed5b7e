//! The list of capabilities: the one place the manifest loader (their grant
//! parsers) and the linker (their imports) learn what a step can be granted.
//! A new capability adds its line to both functions here, and nothing else
//! outside its own file changes.

use std::sync::Arc;

use wasmtime::component::Linker;

use super::{ViewOf, config, container, entities, error, events, http, log, secrets};
use crate::app::GrantRegistry;
use crate::manifest::LoadOptions;

/// The grant parsers, in the order a `grants` line is written.
pub fn grants() -> GrantRegistry {
    GrantRegistry::new(vec![
        Arc::new(entities::EntitiesGrantParser),
        Arc::new(events::EventsGrantParser),
        Arc::new(config::ConfigGrantParser),
        Arc::new(http::HttpGrantParser),
        Arc::new(secrets::SecretsGrantParser),
    ])
}

/// How the host loads manifests: with every capability's grant parser.
pub fn load_options() -> LoadOptions {
    LoadOptions::new(grants())
}

/// Links every capability's imports, each over the call's view (`wasi:http`
/// over the store's own HTTP view, as wasmtime-wasi-http links it).
pub fn add_to_linker<T: wasmtime_wasi_http::WasiHttpView + Send + 'static>(
    linker: &mut Linker<T>,
    view: ViewOf<T>,
) -> wasmtime::Result<()> {
    error::add_to_linker(linker, view)?;
    log::add_to_linker(linker, view)?;
    container::add_to_linker(linker, view)?;
    entities::add_to_linker(linker, view)?;
    events::add_to_linker(linker, view)?;
    config::add_to_linker(linker, view)?;
    secrets::add_to_linker(linker, view)?;
    http::add_to_linker(linker)?;
    Ok(())
}
