//! wasaga-host: runs workflows of sandboxed WebAssembly steps.
//!
//! The modules, each owning one concern (see DESIGN.md):
//! - [`manifest`]: TOML → validated plan, with located errors;
//! - [`saga`]: the orchestrator (scheduling, compensation), over a [`saga::Step`] trait;
//! - [`expr`]: CEL expressions for data mapping and conditions;
//! - [`wasm`]: the wasmtime engine, component cache and per-call sandboxes;
//! - [`capabilities`]: the container of host services granted to steps;
//! - [`wit`]: the host side of the WIT contract (generated bindings);
//! - [`cli`]: the `host` command.

pub mod capabilities;
pub mod cli;
pub mod durable;
pub mod expr;
pub mod journal;
pub mod json;
pub mod manifest;
pub mod saga;
pub mod schema;
pub mod server;
pub mod subscribers;
pub mod wasm;
pub mod wit;
pub mod workflow;

pub use json::Json;

/// The allocator of the `host` binary and the benchmarks: short-lived JSON
/// values and per-call sandboxes allocate a lot, and glibc's malloc was a
/// third of the time of a call in profiles.
pub type Allocator = mimalloc::MiMalloc;
