//! A failed capability call: a step error the guest receives, or a trap; and
//! the mapping between the orchestrator's failure kinds and the WIT's.

use super::bindings::wasaga::step::types as wit;
use crate::saga::FailureKind;

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

    /// The `not-allowed` error of a denial message (see `Grants::denial`).
    pub fn not_allowed(message: String) -> CapabilityError {
        CapabilityError::permanent(FailureKind::NotAllowed, message)
    }
}

impl From<wasmtime::component::ResourceTableError> for CapabilityError {
    fn from(err: wasmtime::component::ResourceTableError) -> CapabilityError {
        CapabilityError::Trap(err.into())
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

impl wit::Host for super::CapabilityView<'_> {
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

/// Links the shared `types` interface (how capability errors reach the guest).
pub fn add_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: super::ViewOf<T>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, super::Capabilities>(linker, view)
}
