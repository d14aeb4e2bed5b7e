//! `create-brand`: stores a new brand (Medusa's `createBrandStep`); compensation deletes it.

use brand_model::{Brand, NewBrand};
use wasaga_sdk::{StepContext, StepError, StepResponse};

fn invoke(input: NewBrand, ctx: &StepContext) -> Result<StepResponse<Brand, String>, StepError> {
    let brand: Brand = ctx.entities("brand")?.create(&input)?;
    wasaga_sdk::log::info(&format!("created brand {} ({})", brand.id, brand.name));
    let id = brand.id.clone();
    Ok(StepResponse::with_compensation(brand, id))
}

fn compensate(id: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(id) = id else { return Ok(()) };
    match ctx.entities("brand")?.delete(&id) {
        // Already gone (a compensation may run twice after a crash): done.
        Err(e) if e.kind() == wasaga_sdk::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

wasaga_sdk::create_step!(invoke, compensate);
