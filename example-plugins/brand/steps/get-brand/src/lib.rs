//! `get-brand`: reads a brand by id (`not-found` if it does not exist). Nothing to undo.

use brand_model::{Brand, Id};
use wasaga_sdk::{StepContext, StepError, StepResponse};

fn invoke(input: Id, ctx: &StepContext) -> Result<StepResponse<Brand>, StepError> {
    let brand: Brand = ctx
        .entities("brand")?
        .get(&input.id)
        .map_err(StepError::permanent)?;
    Ok(StepResponse::new(brand))
}

wasaga_sdk::create_step!(invoke);
