//! wasaga-host: runs workflows of sandboxed WebAssembly steps.
//!
//! What needs no sandbox or storage engine is in `wasaga-core` and re-exported
//! here under the same names ([`saga`], [`expr`], [`json`], [`schema`],
//! [`app`], [`manifest`], and the journal trait in [`journal`]). This crate
//! adds, each owning one concern:
//! - [`wasm`]: the wasmtime engine, component cache and per-call sandboxes;
//! - [`capabilities`]: the host services granted to steps, one file each, and
//!   the WIT bindings they implement;
//! - [`journal`]: the SQLite journal; [`durable`]: runs driven through it;
//! - [`workflow`]: a resolved app bound to its components and services;
//! - [`subscribers`]: delivery of run events;
//! - [`server`]: `host serve`; [`cli`]: the `host` command.

#![deny(missing_docs)]

pub mod capabilities;
pub mod cli;
pub mod durable;
pub mod journal;
pub mod otel;
pub mod postgres;
pub mod server;
pub mod subscribers;
pub mod wasm;
pub mod workflow;

pub use wasaga_core::{Json, app, expr, json, manifest, saga, schema, telemetry};

/// The allocator of the `host` binary and the benchmarks: short-lived JSON
/// values and per-call sandboxes allocate a lot, and glibc's malloc was a
/// third of the time of a call in profiles.
pub type Allocator = mimalloc::MiMalloc;
