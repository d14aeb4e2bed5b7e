//! `compat-step`: a step built against `wit/compat/0.1.0` (the contract as
//! first released), not today's `wit/`, and without the SDK, so that it stays
//! what an old guest is. It uses every import of that contract: it logs,
//! resolves a collection and creates an entity in it, reads a config key and
//! emits an event, and returns what it saw; its compensation deletes the
//! entity.

// The generated bindings are not ours to lint.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/compat/0.1.0",
        world: "step",
        pub_export_macro: true,
        default_bindings_module: "bindings",
    });
}

use bindings::Guest;
use bindings::wasaga::step::container::{Capability, resolve};
use bindings::wasaga::step::log::{Level, log};
use bindings::wasaga::step::types::{ErrorKind, StepContext, StepError, StepOutput, StepResponse};

struct Compat;

fn error(message: String) -> StepError {
    StepError {
        kind: ErrorKind::Unknown,
        message,
        permanent: true,
        compensation_data: None,
    }
}

impl Guest for Compat {
    fn invoke(input: String, ctx: StepContext) -> Result<StepResponse, StepError> {
        log(
            Level::Info,
            &format!("compat step {} of {}", ctx.step, ctx.workflow),
        );
        let Capability::Entities(brands) = resolve("brand")? else {
            return Err(error("'brand' did not resolve to a collection".into()));
        };
        let created = brands.create(&format!("{{\"name\": {input}}}"))?;
        let greeting = match resolve("config")? {
            Capability::Config(settings) => settings.get("greeting")?,
            _ => return Err(error("'config' did not resolve to settings".into())),
        };
        match resolve("events")? {
            Capability::Events(emitter) => emitter.emit("compat.invoked", &created)?,
            _ => return Err(error("'events' did not resolve to an emitter".into())),
        }
        let greeting = greeting.unwrap_or_else(|| "null".into());
        let output = format!("{{\"created\": {created}, \"greeting\": {greeting}}}");
        Ok(StepResponse::Done(StepOutput {
            output,
            compensation_data: Some(created),
        }))
    }

    fn compensate(data: Option<String>, _ctx: StepContext) -> Result<(), StepError> {
        let Some(created) = data else { return Ok(()) };
        let id = created
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| error(format!("no id in {created}")))?;
        let Capability::Entities(brands) = resolve("brand")? else {
            return Err(error("'brand' did not resolve to a collection".into()));
        };
        brands.delete(id)
    }
}

bindings::export!(Compat with_types_in bindings);
