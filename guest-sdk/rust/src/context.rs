//! The step's view of its call: ids, attempt, config, and its granted capabilities.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::__private::bindings::wasaga::step::container::{self, Capability};
use crate::__private::bindings::wasaga::step::secrets;
use crate::__private::bindings::wasaga::step::types as wit;
use crate::{Entities, Events, Http, Settings, StepError};

/// Who is calling and why, and the door to the step's granted capabilities.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The workflow's name.
    pub workflow: String,
    /// The run's unique id.
    pub run_id: String,
    /// The run's transaction id (the run id unless the caller chose one).
    pub transaction_id: String,
    /// The step's name in the flow.
    pub step: String,
    /// Which attempt this is, counting from 1.
    pub attempt: u32,
    /// Stable across attempts of one call: use it to deduplicate side effects.
    pub idempotency_key: String,
    /// Free-form run metadata (a JSON object).
    pub metadata: Value,
    /// This step's `config` from the manifest (`null` when none).
    pub config: Value,
}

impl StepContext {
    pub(crate) fn from_wit(ctx: wit::StepContext) -> Result<StepContext, StepError> {
        let parse = |text: &str, what: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| {
                StepError::invalid_argument(format!("the host sent {what} that is not JSON: {e}"))
                    .permanent()
            })
        };
        Ok(StepContext {
            metadata: parse(&ctx.metadata, "metadata")?,
            config: parse(&ctx.config, "config")?,
            workflow: ctx.workflow,
            run_id: ctx.run_id,
            transaction_id: ctx.transaction_id,
            step: ctx.step,
            attempt: ctx.attempt,
            idempotency_key: ctx.idempotency_key,
        })
    }

    /// The step's `config` as a typed value.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        T::deserialize(&self.config).map_err(|e| {
            StepError::invalid_argument(format!("the step's config does not fit its type: {e}"))
                .permanent()
        })
    }

    /// The entities collection granted as `name` (`grants = { entities = ["name"] }`).
    pub fn entities(&self, name: &str) -> Result<Entities, StepError> {
        match resolve(name)? {
            Capability::Entities(collection) => Ok(Entities::new(collection)),
            _ => Err(wrong_kind(name, "an entities collection")),
        }
    }

    /// The run's event emitter (`grants = { events = true }`).
    pub fn events(&self) -> Result<Events, StepError> {
        match resolve("events")? {
            Capability::Events(emitter) => Ok(Events::new(emitter)),
            _ => Err(wrong_kind("events", "the event emitter")),
        }
    }

    /// The configuration keys granted to the step (`grants = { config = ["key"] }`).
    pub fn settings(&self) -> Result<Settings, StepError> {
        match resolve("config")? {
            Capability::Config(settings) => Ok(Settings::new(settings)),
            _ => Err(wrong_kind("config", "the config reader")),
        }
    }
}

impl StepContext {
    /// Outbound HTTP (`grants = { http = ["https://api.example.com"] }`).
    /// Every request carries `Idempotency-Key: <idempotency_key>:<n>` (n
    /// counts this call's requests) unless the step sets one.
    pub fn http(&self) -> Http {
        Http
    }

    /// A placeholder for the secret `name` (`grants = { secrets = ["name"] }`):
    /// put it where the value belongs in a request (a header, the query, the
    /// body); the host swaps the value in on requests to the secret's hosts.
    pub fn secret(&self, name: &str) -> Result<String, StepError> {
        secrets::placeholder(name).map_err(StepError::from_wit)
    }
}

fn resolve(name: &str) -> Result<Capability, StepError> {
    container::resolve(name).map_err(StepError::from_wit)
}

fn wrong_kind(name: &str, wanted: &str) -> StepError {
    StepError::invalid_argument(format!("the capability '{name}' is not {wanted}")).permanent()
}
