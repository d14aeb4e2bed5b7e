//! `create-order`: records the order with its charge; the compensation
//! deletes it.

use serde::Deserialize;
use wasaga_sdk::{ErrorKind, StepContext, StepError, StepResponse, Value, json};

#[derive(Deserialize)]
struct Input {
    cart: String,
    email: String,
    amount: u64,
    currency: String,
    charge: String,
}

fn invoke(input: Input, ctx: &StepContext) -> Result<StepResponse<Value, String>, StepError> {
    let order: Value = ctx.entities("order")?.create(&json!({
        "cart": input.cart,
        "email": input.email,
        "amount": input.amount,
        "currency": input.currency,
        "charge": input.charge,
        "status": "paid",
    }))?;
    let id = order["id"].as_str().unwrap_or_default().to_string();
    Ok(StepResponse::with_compensation(order, id))
}

fn compensate(id: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(id) = id else { return Ok(()) };
    match ctx.entities("order")?.delete(&id) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

wasaga_sdk::create_step!(invoke, compensate);
