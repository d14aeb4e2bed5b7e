//! Typed access to the manifest's `[config]` keys granted to the step.

use serde::de::DeserializeOwned;

use crate::__private::bindings::wasaga::step::config::Settings as WitSettings;
use crate::StepError;

/// Read access to the `[config]` keys granted to this step.
pub struct Settings {
    settings: WitSettings,
}

impl Settings {
    pub(crate) fn new(settings: WitSettings) -> Settings {
        Settings { settings }
    }

    /// The value of `key` as `T`, or `None` if the manifest does not set it.
    /// `not-allowed` if the key is not granted to the step.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StepError> {
        match self.settings.get(key).map_err(StepError::from_wit)? {
            Some(text) => Ok(Some(serde_json::from_str(&text)?)),
            None => Ok(None),
        }
    }
}
