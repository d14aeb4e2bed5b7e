//! `validate-brand`: a brand name needs at least `min-length` characters (config, default 2).

use serde::Deserialize;
use wasaga_sdk::{StepContext, StepError, StepResponse, Value};

#[derive(Deserialize)]
struct Input {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default)]
struct Config {
    min_length: Option<usize>,
}

fn invoke(input: Value, ctx: &StepContext) -> Result<StepResponse<Value>, StepError> {
    let brand: Input = serde_json::from_value(input.clone())?;
    let config: Config = if ctx.config.is_null() {
        Config::default()
    } else {
        ctx.config_as()?
    };
    let min = config.min_length.unwrap_or(2);
    let length = brand.name.trim().chars().count();
    if length < min {
        return Err(StepError::invalid_data(format!(
            "brand name '{}' is too short: {length} characters, at least {min} needed",
            brand.name
        ))
        .permanent());
    }
    Ok(StepResponse::new(input))
}

wasaga_sdk::create_step!(invoke);
