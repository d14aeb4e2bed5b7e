//! `notify-customer`: posts the order to the shop's webhook. Nothing to
//! undo; if the webhook keeps failing, the saga refunds and releases.

use serde::Deserialize;
use wasaga_sdk::{StepContext, StepError, StepResponse, Value, json};

#[derive(Deserialize)]
struct Input {
    order: String,
    email: String,
}

fn invoke(input: Input, ctx: &StepContext) -> Result<StepResponse<Value>, StepError> {
    let url: String = ctx
        .settings()?
        .get("webhook")?
        .ok_or_else(|| StepError::invalid_data("[config] webhook is not set").permanent())?;
    let response = ctx
        .http()
        .post(&url)
        .json(&json!({ "order": input.order, "email": input.email }))?
        .send()?;
    if !response.is_success() {
        return Err(StepError::unknown(format!(
            "the webhook answered {}",
            response.status
        )));
    }
    Ok(StepResponse::new(json!({ "notified": input.email })))
}

wasaga_sdk::create_step!(invoke);
