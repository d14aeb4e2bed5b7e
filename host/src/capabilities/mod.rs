//! The capabilities: host services a step may reach, each granted per step by
//! the manifest and denied by default.
//!
//! Every capability has one shape, in one file or folder here: its grant type
//! with its spanned parser, its per-workflow state, its `add_to_linker`, its
//! host impl, and unit tests against the host impl. [`registry`] lists them;
//! the manifest loader and the linker read that list and nothing else. To add
//! a capability: a new file here, a line in [`registry`], its WIT interface
//! (a new one, never a new case of an existing variant), and the SDKs.
//!
//! This module implements the WIT imports over a [`CapabilityView`]; it may
//! not touch the orchestrator's scheduling or the WASM engine (it links
//! against any store data that can lend a view).

pub mod bindings;
pub mod config;
pub mod container;
pub mod entities;
mod error;
pub mod events;
pub mod http;
pub mod log;
pub mod registry;
pub mod secrets;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize};

use wasmtime::component::{HasData, ResourceTable};

use crate::app::{ConfigValues, Grants};
use crate::saga::RunEvents;

pub use entities::EntityStore;
pub use error::{CapabilityError, from_wit_kind};
pub use http::{OutboundCall, OutboundClient};
pub use secrets::{SecretSource, SecretValues};

/// The services of one workflow: shared by all its steps.
#[derive(Clone)]
pub struct Services {
    /// The entities store.
    pub entities: Arc<EntityStore>,
    /// The `[config]` table.
    pub config: Arc<ConfigValues>,
    /// The values of the secrets the manifest declares.
    pub secrets: Arc<SecretValues>,
    /// The pooled outbound HTTP client (one per host process).
    pub http: Arc<OutboundClient>,
}

/// What one call may reach: the services, the step's grants, and who it is.
pub struct CallCapabilities {
    /// The workflow's services.
    pub services: Services,
    /// What the manifest grants this step.
    pub grants: Arc<Grants>,
    /// The step's call name, for logs and events.
    pub node: Arc<str>,
    /// The run's id, for logs.
    pub run_id: Arc<str>,
    /// The run's events.
    pub events: Arc<RunEvents>,
    /// Names this call across its attempts and lives (`run:node:action`),
    /// so the entities it creates get the same ids when it runs again.
    pub origin: Option<Arc<str>>,
    /// How many entities this attempt has created so far.
    pub created: AtomicU32,
    /// How many events this attempt has emitted so far.
    pub emitted: AtomicU32,
    /// How many entity writes (creates, updates, deletes) this attempt made.
    pub entity_writes: AtomicU32,
    /// How many bytes of entity data this attempt wrote.
    pub entity_bytes: AtomicUsize,
    /// How many bytes of log this attempt has written so far.
    pub logged: AtomicUsize,
    /// This attempt's outbound HTTP: secrets' placeholders, requests made.
    pub outbound: Arc<OutboundCall>,
    /// The run's lease: the call's entity writes are applied only while it
    /// holds (none for runs in memory and subscriber deliveries).
    pub fence: Option<crate::saga::Fence>,
}

impl CallCapabilities {
    /// `text` without the values of the secrets granted to this step (see
    /// [`SecretValues::scrub`]); borrowed, at no cost, when none is granted.
    pub fn scrub<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let granted = self.grants.get::<crate::app::NamesGrant>(secrets::KEY);
        if granted.is_none() {
            return std::borrow::Cow::Borrowed(text);
        }
        self.services.secrets.scrub(granted, text)
    }
}

/// The capabilities of one call with the store's resource table: what the
/// WIT import implementations work on.
pub struct CapabilityView<'a> {
    /// The call's capabilities.
    pub call: &'a CallCapabilities,
    /// The store's resource table (handles live there).
    pub table: &'a mut ResourceTable,
}

/// [`HasData`] marker for linking the imports against a [`CapabilityView`].
pub struct Capabilities;

impl HasData for Capabilities {
    type Data<'a> = CapabilityView<'a>;
}

/// How a store's data lends its call's view to the imports.
pub type ViewOf<T> = fn(&mut T) -> CapabilityView<'_>;
