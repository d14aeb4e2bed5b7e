//! Glue between the generated bindings and the typed step functions; used by
//! [`create_step!`](crate::create_step) only.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{StepContext, StepError, StepResponse};

#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "export_step",
        default_bindings_module: "wasaga_sdk::__private::bindings",
        runtime_path: "wasaga_sdk::__private::wit_bindgen_rt",
    });
}

pub use bindings::Guest;
pub use bindings::export_step;
pub use bindings::wasaga::step::types::{
    StepContext as WitContext, StepError as WitError, StepResponse as WitResponse,
};
pub use wit_bindgen::rt as wit_bindgen_rt;

use bindings::wasaga::step::types::StepOutput;

/// Runs a typed `invoke` on the raw arguments of the export.
pub fn invoke<I, O, C, F>(input: String, ctx: WitContext, f: F) -> Result<WitResponse, WitError>
where
    I: DeserializeOwned,
    O: Serialize,
    C: Serialize,
    F: FnOnce(I, &StepContext) -> Result<StepResponse<O, C>, StepError>,
{
    let run = || {
        let ctx = StepContext::from_wit(ctx)?;
        let input: I = serde_json::from_str(&input).map_err(|e| {
            StepError::invalid_data(format!("the step's input does not fit its type: {e}"))
                .permanent()
        })?;
        match f(input, &ctx)? {
            StepResponse::Skip => Ok(WitResponse::Skip),
            StepResponse::Done {
                output,
                compensation,
            } => Ok(WitResponse::Done(StepOutput {
                output: to_json(&output, "output")?,
                compensation_data: compensation
                    .map(|c| to_json(&c, "compensation data"))
                    .transpose()?,
            })),
        }
    };
    run().map_err(StepError::into_wit)
}

/// Runs a typed `compensate` on the raw arguments of the export.
pub fn compensate<C, F>(data: Option<String>, ctx: WitContext, f: F) -> Result<(), WitError>
where
    C: DeserializeOwned,
    F: FnOnce(Option<C>, &StepContext) -> Result<(), StepError>,
{
    let run = || {
        let ctx = StepContext::from_wit(ctx)?;
        let data = data
            .map(|text| serde_json::from_str::<C>(&text))
            .transpose()
            .map_err(|e| {
                StepError::invalid_data(format!(
                    "the compensation data does not fit the compensate function's type: {e}"
                ))
                .permanent()
            })?;
        f(data, &ctx)
    };
    run().map_err(StepError::into_wit)
}

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String, StepError> {
    serde_json::to_string(value).map_err(|e| {
        StepError::invalid_data(format!("the step's {what} is not JSON: {e}")).permanent()
    })
}
