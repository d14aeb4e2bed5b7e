//! `charge-payment`: charges the card at the payment provider over HTTP,
//! authenticated with the `pay-key` secret (the step holds only a
//! placeholder); the compensation refunds the charge. Both requests carry
//! the host's idempotency key, so a retry or a resume after a crash charges
//! (or refunds) once.

use serde::Deserialize;
use wasaga_sdk::{StepContext, StepError, StepResponse, Value, json};

#[derive(Deserialize)]
struct Input {
    cart: String,
    amount: u64,
    currency: String,
    card: String,
}

#[derive(Deserialize)]
struct Charge {
    id: String,
    status: String,
}

fn provider(ctx: &StepContext) -> Result<String, StepError> {
    let settings = ctx.settings()?;
    settings
        .get::<String>("provider")?
        .ok_or_else(|| StepError::invalid_data("[config] provider is not set").permanent())
}

fn invoke(input: Input, ctx: &StepContext) -> Result<StepResponse<Value, String>, StepError> {
    let key = ctx.secret("pay-key")?;
    let response = ctx
        .http()
        .post(&format!("{}/v1/charges", provider(ctx)?))
        .bearer(&key)
        .json(&json!({
            "amount": input.amount,
            "currency": input.currency,
            "card": input.card,
            "reference": input.cart,
        }))?
        .send()?;
    match response.status {
        200 | 201 => {}
        402 => {
            let reason: Value = response.json().unwrap_or_default();
            return Err(StepError::invalid_data(format!(
                "the card was declined: {}",
                reason["error"].as_str().unwrap_or("no reason given")
            ))
            .permanent());
        }
        401 => {
            return Err(StepError::unauthorized(
                "the payment provider refused the API key (is WASAGA_SECRET_PAY_KEY right?)",
            )
            .permanent());
        }
        status => {
            return Err(StepError::unknown(format!(
                "the payment provider answered {status}: {}",
                response.text()
            )));
        }
    }
    let charge: Charge = response.json()?;
    wasaga_sdk::log::info(&format!(
        "charged {} {} as {}",
        input.amount, input.currency, charge.id
    ));
    let id = charge.id.clone();
    Ok(StepResponse::with_compensation(
        json!({ "charge": charge.id, "status": charge.status }),
        id,
    ))
}

fn compensate(charge: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(charge) = charge else { return Ok(()) };
    let key = ctx.secret("pay-key")?;
    let response = ctx
        .http()
        .post(&format!("{}/v1/refunds", provider(ctx)?))
        .bearer(&key)
        .json(&json!({ "charge": charge }))?
        .send()?;
    if !response.is_success() {
        return Err(StepError::unknown(format!(
            "the refund of {charge} failed with {}: {}",
            response.status,
            response.text()
        )));
    }
    wasaga_sdk::log::info(&format!("refunded {charge}"));
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
