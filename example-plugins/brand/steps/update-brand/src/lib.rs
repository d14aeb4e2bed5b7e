//! `update-brand`: changes a brand's fields; compensation writes the previous values back.

use brand_model::Brand;
use serde::Deserialize;
use wasaga_sdk::{StepContext, StepError, StepResponse, Value, json};

/// The brand's id and the fields to change.
#[derive(Deserialize)]
struct Changes {
    id: String,
    #[serde(flatten)]
    fields: serde_json::Map<String, Value>,
}

fn invoke(input: Changes, ctx: &StepContext) -> Result<StepResponse<Brand, Value>, StepError> {
    let brands = ctx.entities("brand")?;
    let before: Value = brands.get(&input.id).map_err(StepError::permanent)?;
    // Remember the previous value of every changed field (null if it was unset).
    let previous: serde_json::Map<String, Value> = input
        .fields
        .keys()
        .map(|k| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    let after: Brand = brands.update(&input.id, &input.fields)?;
    Ok(StepResponse::with_compensation(
        after,
        json!({ "id": input.id, "previous": previous }),
    ))
}

/// Compensation data: the brand's id and its previous field values.
#[derive(Deserialize)]
struct Previous {
    id: String,
    previous: serde_json::Map<String, Value>,
}

fn compensate(data: Option<Previous>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(data) = data else { return Ok(()) };
    let _: Value = ctx.entities("brand")?.update(&data.id, &data.previous)?;
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
