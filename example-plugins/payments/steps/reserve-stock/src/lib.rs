//! `reserve-stock`: holds the cart's items (an entity per cart); the
//! compensation releases them.

use serde::{Deserialize, Serialize};
use wasaga_sdk::{ErrorKind, StepContext, StepError, StepResponse, Value};

#[derive(Deserialize, Serialize)]
struct Item {
    sku: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct Cart {
    cart: String,
    items: Vec<Item>,
}

fn invoke(input: Cart, ctx: &StepContext) -> Result<StepResponse<Value, String>, StepError> {
    if input.items.is_empty() {
        return Err(StepError::invalid_data("the cart has no items").permanent());
    }
    let reservation: Value = ctx.entities("reservation")?.create(&serde_json::json!({
        "cart": input.cart,
        "items": input.items,
    }))?;
    let id = reservation["id"].as_str().unwrap_or_default().to_string();
    wasaga_sdk::log::info(&format!("reserved the items of cart {} ({id})", input.cart));
    Ok(StepResponse::with_compensation(reservation, id))
}

fn compensate(id: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(id) = id else { return Ok(()) };
    match ctx.entities("reservation")?.delete(&id) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

wasaga_sdk::create_step!(invoke, compensate);
