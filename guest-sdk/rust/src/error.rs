//! Typed step errors (Medusa's `MedusaError` types) and their WIT form.

use std::fmt;

use serde::Serialize;

use crate::__private::bindings::wasaga::step::types as wit;

/// What kind of failure a [`StepError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input or the data a step works on is not valid.
    InvalidData,
    /// A call received an argument it cannot use.
    InvalidArgument,
    /// A looked-up entity or resource does not exist.
    NotFound,
    /// The step asked for something it was not granted or may not do.
    NotAllowed,
    /// The caller is not authenticated.
    Unauthorized,
    /// The caller is authenticated but may not do this.
    Forbidden,
    /// The change conflicts with the current state.
    Conflict,
    /// The entity already exists.
    Duplicate,
    /// The system is in a state the step did not expect.
    UnexpectedState,
    /// A storage operation failed.
    Database,
    /// Anything else.
    Unknown,
}

impl ErrorKind {
    /// The kind's name as the host and the manifests write it (`invalid-data`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidData => "invalid-data",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::NotFound => "not-found",
            ErrorKind::NotAllowed => "not-allowed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Duplicate => "duplicate",
            ErrorKind::UnexpectedState => "unexpected-state",
            ErrorKind::Database => "database",
            ErrorKind::Unknown => "unknown",
        }
    }

    /// The kind for a name as [`ErrorKind::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == name)
    }

    fn to_wit(self) -> wit::ErrorKind {
        match self {
            ErrorKind::InvalidData => wit::ErrorKind::InvalidData,
            ErrorKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
            ErrorKind::NotFound => wit::ErrorKind::NotFound,
            ErrorKind::NotAllowed => wit::ErrorKind::NotAllowed,
            ErrorKind::Unauthorized => wit::ErrorKind::Unauthorized,
            ErrorKind::Forbidden => wit::ErrorKind::Forbidden,
            ErrorKind::Conflict => wit::ErrorKind::Conflict,
            ErrorKind::Duplicate => wit::ErrorKind::Duplicate,
            ErrorKind::UnexpectedState => wit::ErrorKind::UnexpectedState,
            ErrorKind::Database => wit::ErrorKind::Database,
            ErrorKind::Unknown => wit::ErrorKind::Unknown,
        }
    }

    fn from_wit(kind: wit::ErrorKind) -> ErrorKind {
        match kind {
            wit::ErrorKind::InvalidData => ErrorKind::InvalidData,
            wit::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            wit::ErrorKind::NotFound => ErrorKind::NotFound,
            wit::ErrorKind::NotAllowed => ErrorKind::NotAllowed,
            wit::ErrorKind::Unauthorized => ErrorKind::Unauthorized,
            wit::ErrorKind::Forbidden => ErrorKind::Forbidden,
            wit::ErrorKind::Conflict => ErrorKind::Conflict,
            wit::ErrorKind::Duplicate => ErrorKind::Duplicate,
            wit::ErrorKind::UnexpectedState => ErrorKind::UnexpectedState,
            wit::ErrorKind::Database => ErrorKind::Database,
            wit::ErrorKind::Unknown => ErrorKind::Unknown,
        }
    }
}

const ALL_KINDS: [ErrorKind; 11] = [
    ErrorKind::InvalidData,
    ErrorKind::InvalidArgument,
    ErrorKind::NotFound,
    ErrorKind::NotAllowed,
    ErrorKind::Unauthorized,
    ErrorKind::Forbidden,
    ErrorKind::Conflict,
    ErrorKind::Duplicate,
    ErrorKind::UnexpectedState,
    ErrorKind::Database,
    ErrorKind::Unknown,
];

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step failure: a kind, a message, whether retrying can help, and optional
/// data for the step's own compensation.
///
/// ```
/// use wasaga_sdk::{ErrorKind, StepError};
/// let err = StepError::invalid_data("name is too short").permanent();
/// assert_eq!(err.kind(), ErrorKind::InvalidData);
/// assert!(err.is_permanent());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    kind: ErrorKind,
    message: String,
    permanent: bool,
    compensation: Option<serde_json::Value>,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> StepError {
                StepError::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl StepError {
    /// An error of `kind`; transient (retried per the manifest) until
    /// [`StepError::permanent`] is called.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StepError {
        StepError {
            kind,
            message: message.into(),
            permanent: false,
            compensation: None,
        }
    }

    constructors! {
        /// `invalid-data`: the input or stored data is not valid.
        invalid_data => InvalidData,
        /// `invalid-argument`: an argument cannot be used.
        invalid_argument => InvalidArgument,
        /// `not-found`: something looked up does not exist.
        not_found => NotFound,
        /// `not-allowed`: not granted or not permitted.
        not_allowed => NotAllowed,
        /// `unauthorized`: not authenticated.
        unauthorized => Unauthorized,
        /// `forbidden`: authenticated, but not permitted.
        forbidden => Forbidden,
        /// `conflict`: conflicts with the current state.
        conflict => Conflict,
        /// `duplicate`: already exists.
        duplicate => Duplicate,
        /// `unexpected-state`: the system is in an unexpected state.
        unexpected_state => UnexpectedState,
        /// `database`: a storage operation failed.
        database => Database,
        /// `unknown`: anything else.
        unknown => Unknown,
    }

    /// Marks the error permanent: the host will not retry the step.
    pub fn permanent(mut self) -> StepError {
        self.permanent = true;
        self
    }

    /// Attaches data for this step's compensation (Medusa's
    /// `permanentFailure(message, data)`): `compensate` receives it.
    pub fn with_compensation<T: Serialize + ?Sized>(mut self, data: &T) -> StepError {
        self.compensation = serde_json::to_value(data).ok();
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the host may retry.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The compensation data attached with [`StepError::with_compensation`].
    pub fn compensation(&self) -> Option<&serde_json::Value> {
        self.compensation.as_ref()
    }

    pub(crate) fn into_wit(self) -> wit::StepError {
        wit::StepError {
            kind: self.kind.to_wit(),
            message: self.message,
            permanent: self.permanent,
            compensation_data: self.compensation.map(|v| v.to_string()),
        }
    }

    pub(crate) fn from_wit(err: wit::StepError) -> StepError {
        StepError {
            kind: ErrorKind::from_wit(err.kind),
            message: err.message,
            permanent: err.permanent,
            compensation: err
                .compensation_data
                .and_then(|text| serde_json::from_str(&text).ok()),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for StepError {}

/// JSON that does not fit a type is invalid data, and retrying will not fix it.
impl From<serde_json::Error> for StepError {
    fn from(err: serde_json::Error) -> StepError {
        StepError::invalid_data(err.to_string()).permanent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ALL_KINDS {
            assert_eq!(ErrorKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(ErrorKind::from_wit(kind.to_wit()), kind);
        }
        assert_eq!(ErrorKind::from_name("nope"), None);
    }

    #[test]
    fn permanent_and_compensation_reach_the_wit_error() {
        let err = StepError::conflict("taken")
            .permanent()
            .with_compensation(&serde_json::json!({"id": "b1"}));
        let wit = err.clone().into_wit();
        assert!(wit.permanent);
        assert_eq!(wit.message, "taken");
        assert_eq!(wit.compensation_data.as_deref(), Some(r#"{"id":"b1"}"#));
        assert_eq!(StepError::from_wit(wit), err);
        assert_eq!(err.to_string(), "conflict: taken");
    }

    #[test]
    fn json_errors_are_permanent_invalid_data() {
        let err: StepError = serde_json::from_str::<u32>("\"x\"").unwrap_err().into();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.is_permanent());
    }
}
