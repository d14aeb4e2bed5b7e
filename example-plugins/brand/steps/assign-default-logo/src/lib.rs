//! `assign-default-logo`: sets a brand's `logo_url` to the `default-logo-url` config
//! value; compensation removes it again.

use brand_model::{Brand, Id};
use wasaga_sdk::{StepContext, StepError, StepResponse, json};

fn invoke(input: Id, ctx: &StepContext) -> Result<StepResponse<Brand, String>, StepError> {
    let logo: String = ctx.settings()?.get("default-logo-url")?.ok_or_else(|| {
        StepError::not_found("config key 'default-logo-url' is not set in [config]").permanent()
    })?;
    let brand: Brand = ctx
        .entities("brand")?
        .update(&input.id, &json!({ "logo_url": logo }))?;
    Ok(StepResponse::with_compensation(brand, input.id))
}

fn compensate(id: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
    let Some(id) = id else { return Ok(()) };
    let _: Brand = ctx
        .entities("brand")?
        .update(&id, &json!({ "logo_url": null }))?;
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
