//! wasaga-core: the parts of Wasaga that need no sandbox, storage engine, HTTP
//! server or CLI, so that they build and test in seconds.
//!
//! The layers point one way: authored TOML ([`manifest`]) → the resolved
//! application ([`app`]) → (in the host) a loaded workflow → the orchestrator's
//! plan ([`saga`]). Modules:
//! - [`saga`]: the orchestrator (scheduling, compensation), over a [`saga::Step`] trait;
//! - [`expr`]: CEL expressions for data mapping and conditions;
//! - [`json`]: the JSON value steps exchange;
//! - [`schema`]: JSON Schema checks of inputs and outputs;
//! - [`app`]: the resolved application model every later stage consumes;
//! - [`manifest`]: the loader, TOML → [`app::App`], with located errors;
//! - [`journal`]: the durable record's trait and the orchestrator's recorder over it.
//!
//! This crate may not depend on wasmtime, rusqlite, axum or clap (checked by
//! `cargo tree -p wasaga-core`).

#![deny(missing_docs)]

pub mod app;
pub mod expr;
pub mod journal;
pub mod json;
pub mod manifest;
pub mod saga;
pub mod schema;
pub mod telemetry;

pub use json::Json;
