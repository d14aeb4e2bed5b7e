//! `sdk-check` in Rust: one step whose input picks an SDK feature to
//! exercise. The same step is written with the Python and JavaScript SDKs;
//! the conformance test runs all three through one manifest and compares.

use wasaga_sdk::{ErrorKind, StepContext, StepError, StepResponse, Value, json};

fn invoke(input: Value, ctx: &StepContext) -> Result<StepResponse<Value>, StepError> {
    match input["op"].as_str().unwrap_or("") {
        "create" => {
            let brand: Value = ctx
                .entities("brand")?
                .create(&json!({ "name": input["name"] }))?;
            let id = brand["id"].clone();
            Ok(StepResponse::with_compensation(
                json!({ "name": brand["name"], "created": true }),
                id,
            ))
        }
        "fail" => {
            let kind = ErrorKind::from_name(input["kind"].as_str().unwrap_or("unknown"))
                .unwrap_or(ErrorKind::Unknown);
            let mut error = StepError::new(
                kind,
                input["message"].as_str().unwrap_or("failed on purpose"),
            );
            if input["permanent"].as_bool() == Some(true) {
                error = error.permanent();
            }
            if !input["compensation"].is_null() {
                error = error.with_compensation(&input["compensation"]);
            }
            Err(error)
        }
        "skip" => Ok(StepResponse::skip()),
        "emit" => {
            ctx.events()?.emit("sdk.emitted", &input)?;
            Ok(StepResponse::new(json!({ "emitted": true })))
        }
        "context" => {
            let greeting: Option<Value> = ctx.settings()?.get("greeting")?;
            Ok(StepResponse::new(json!({
                "greeting": greeting,
                "config": ctx.config,
                "attempt": ctx.attempt,
                "key": ctx.idempotency_key,
                "workflow": ctx.workflow,
            })))
        }
        "list" => {
            let brands = ctx.entities("brand")?;
            let found: Vec<Value> =
                brands.list(&wasaga_sdk::Query::new().eq("name", &input["name"]))?;
            Ok(StepResponse::new(json!({ "count": found.len() })))
        }
        "not-granted" => {
            ctx.entities("secret")?;
            Ok(StepResponse::new(Value::Null))
        }
        "missing" => {
            let got: Result<Value, StepError> = ctx.entities("brand")?.get("brand_missing");
            let error = got.expect_err("no such brand");
            Ok(StepResponse::new(json!({ "kind": error.kind().as_str() })))
        }
        other => Err(StepError::invalid_argument(format!("unknown op '{other}'")).permanent()),
    }
}

fn compensate(data: Option<Value>, ctx: &StepContext) -> Result<(), StepError> {
    if let Some(Value::String(id)) = data {
        ctx.entities("brand")?.delete(&id)?;
    }
    wasaga_sdk::log::info(&format!("sdk-check compensated ({})", ctx.step));
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
