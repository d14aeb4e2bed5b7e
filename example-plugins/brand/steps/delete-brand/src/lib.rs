//! `delete-brand`: soft-deletes a brand; compensation restores it.

use brand_model::{Brand, Id};
use wasaga_sdk::{ErrorKind, StepContext, StepError, StepResponse, Value, json};

fn invoke(input: Id, ctx: &StepContext) -> Result<StepResponse<Value, String>, StepError> {
    let brand: Brand = ctx
        .entities("brand")?
        .soft_delete(&input.id)
        .map_err(StepError::permanent)?;
    Ok(StepResponse::with_compensation(
        json!({ "id": brand.id, "deleted": true }),
        brand.id,
    ))
}

fn compensate(id: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(id) = id else { return Ok(()) };
    match ctx.entities("brand")?.restore::<Value>(&id) {
        Ok(_) => Ok(()),
        // Restoring twice (a compensation retried after a crash) is fine.
        Err(e) if e.kind() == ErrorKind::UnexpectedState => Ok(()),
        Err(e) => Err(e),
    }
}

wasaga_sdk::create_step!(invoke, compensate);
