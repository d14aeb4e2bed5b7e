//! The container: host services a step may reach, each granted per step by the
//! manifest and denied by default. One module per capability:
//! [`entities`] (a SQLite-backed JSON store), [`events`], [`config`], [`log`].
//!
//! This module implements the WIT imports over a [`CapabilityView`]; it may
//! not touch the orchestrator or the WASM engine.

pub mod config;
pub mod container;
pub mod entities;
pub mod events;
pub mod grants;
pub mod log;
pub mod query;

use std::sync::Arc;

use wasmtime::component::{HasData, ResourceTable};

use crate::saga::{FailureKind, RunEvents};
use crate::wit::wasaga::step::types as wit;

pub use config::ConfigValues;
pub use entities::EntityStore;
pub use grants::Grants;

/// The services of one workflow: shared by all its steps.
#[derive(Clone)]
pub struct Services {
    /// The entities store.
    pub entities: Arc<EntityStore>,
    /// The `[config]` table.
    pub config: Arc<ConfigValues>,
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
    pub created: std::sync::atomic::AtomicU32,
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

/// A failed capability call: a step error the guest receives, or a trap
/// (a broken handle, which only a misbehaving guest can cause).
#[derive(Debug)]
pub enum CapabilityError {
    /// Returned to the guest as a `step-error`.
    Step {
        /// The category.
        kind: FailureKind,
        /// For people.
        message: String,
        /// Whether retrying can help.
        permanent: bool,
    },
    /// Ends the call with a trap.
    Trap(wasmtime::Error),
}

impl CapabilityError {
    /// A transient step error.
    pub fn step(kind: FailureKind, message: impl Into<String>) -> CapabilityError {
        CapabilityError::Step {
            kind,
            message: message.into(),
            permanent: false,
        }
    }

    /// A permanent step error.
    pub fn permanent(kind: FailureKind, message: impl Into<String>) -> CapabilityError {
        CapabilityError::Step {
            kind,
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<wasmtime::component::ResourceTableError> for CapabilityError {
    fn from(err: wasmtime::component::ResourceTableError) -> CapabilityError {
        CapabilityError::Trap(err.into())
    }
}

impl From<rusqlite::Error> for CapabilityError {
    fn from(err: rusqlite::Error) -> CapabilityError {
        CapabilityError::step(FailureKind::Database, format!("entities store: {err}"))
    }
}

/// Host-only kinds have no WIT counterpart; a guest sees them as `unknown`.
fn to_wit_kind(kind: FailureKind) -> wit::ErrorKind {
    match kind {
        FailureKind::InvalidData => wit::ErrorKind::InvalidData,
        FailureKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
        FailureKind::NotFound => wit::ErrorKind::NotFound,
        FailureKind::NotAllowed => wit::ErrorKind::NotAllowed,
        FailureKind::Unauthorized => wit::ErrorKind::Unauthorized,
        FailureKind::Forbidden => wit::ErrorKind::Forbidden,
        FailureKind::Conflict => wit::ErrorKind::Conflict,
        FailureKind::Duplicate => wit::ErrorKind::Duplicate,
        FailureKind::UnexpectedState => wit::ErrorKind::UnexpectedState,
        FailureKind::Database => wit::ErrorKind::Database,
        _ => wit::ErrorKind::Unknown,
    }
}

/// The WIT error kind as the orchestrator's failure kind.
pub fn from_wit_kind(kind: wit::ErrorKind) -> FailureKind {
    match kind {
        wit::ErrorKind::InvalidData => FailureKind::InvalidData,
        wit::ErrorKind::InvalidArgument => FailureKind::InvalidArgument,
        wit::ErrorKind::NotFound => FailureKind::NotFound,
        wit::ErrorKind::NotAllowed => FailureKind::NotAllowed,
        wit::ErrorKind::Unauthorized => FailureKind::Unauthorized,
        wit::ErrorKind::Forbidden => FailureKind::Forbidden,
        wit::ErrorKind::Conflict => FailureKind::Conflict,
        wit::ErrorKind::Duplicate => FailureKind::Duplicate,
        wit::ErrorKind::UnexpectedState => FailureKind::UnexpectedState,
        wit::ErrorKind::Database => FailureKind::Database,
        wit::ErrorKind::Unknown => FailureKind::Unknown,
    }
}

impl wit::Host for CapabilityView<'_> {
    fn convert_step_error(&mut self, err: CapabilityError) -> wasmtime::Result<wit::StepError> {
        match err {
            CapabilityError::Step {
                kind,
                message,
                permanent,
            } => Ok(wit::StepError {
                kind: to_wit_kind(kind),
                message,
                permanent,
                compensation_data: None,
            }),
            CapabilityError::Trap(trap) => Err(trap),
        }
    }
}
