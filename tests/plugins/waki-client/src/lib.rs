//! `waki-client`: GETs `input.url` with waki, an ordinary WASI 0.2 HTTP
//! client that knows nothing of Wasaga, and returns the status and body.
//! The host's grant, idempotency key and trace apply to it all the same.

use serde::Deserialize;
use wasaga_sdk::{StepContext, StepError, StepResponse, Value, json};

#[derive(Deserialize)]
struct Input {
    url: String,
}

fn invoke(input: Input, _ctx: &StepContext) -> Result<StepResponse<Value>, StepError> {
    let response = waki::Client::new()
        .get(&input.url)
        .send()
        .map_err(|e| StepError::unknown(format!("waki: {e}")))?;
    let status = response.status_code();
    let body = response
        .body()
        .map_err(|e| StepError::unknown(format!("waki: {e}")))?;
    Ok(StepResponse::new(json!({
        "status": status,
        "body": String::from_utf8_lossy(&body),
    })))
}

wasaga_sdk::create_step!(invoke);
